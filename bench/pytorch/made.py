#!/usr/bin/python3
"""MADE (models/made.graph: D=784, H=500) in eager PyTorch.

One hidden layer of ReLUs with the natural-order masks of Germain et al.
(2015), as the graph's mask kinds made_in / made_out: input k has degree
k + 1, hidden unit j degree 1 + floor(j (D - 1) / H); W keeps m(j) >= k + 1, V
keeps i + 1 > m(j). h = relu(x @ (W * M_W) + c), logit = h @ (V * M_V) + b,
log p(x) = -sum_i bernoulli_nll(logit_i, x_i). The loss is the mean NLL,
as arjit's train_step. Use /usr/bin/python3 (Debian's python3-torch).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

D, H = 784, 500
VARIANTS = ["vectorised"]


def build(torch):
    """The graph's parameters: W, V xavier (uniform), c, b zeros."""
    p = {"W": torch.empty(D, H), "c": torch.zeros(H), "V": torch.empty(H, D), "b": torch.zeros(D)}
    torch.nn.init.xavier_uniform_(p["W"])
    torch.nn.init.xavier_uniform_(p["V"])
    return {k: v.requires_grad_() for k, v in p.items()}


def nll_fns(torch, p):
    F = torch.nn.functional
    W, c, V, b = p["W"], p["c"], p["V"], p["b"]
    m_in = torch.arange(1, D + 1, dtype=W.dtype)                 # input degrees 1..D
    m_h = 1 + torch.div(torch.arange(H) * (D - 1), H, rounding_mode='floor').to(W.dtype)   # hidden degrees 1..D-1, evenly
    mask_w = (m_h[None, :] >= m_in[:, None]).to(W.dtype)         # [D, H]
    mask_v = (m_in[None, :] > m_h[:, None]).to(W.dtype)          # [H, D]

    def vectorised(x):
        h = torch.relu(x @ (W * mask_w) + c)
        logit = h @ (V * mask_v) + b
        return F.binary_cross_entropy_with_logits(logit, x, reduction="none").sum(1)

    return {"vectorised": vectorised}


if __name__ == "__main__":
    common.run("made", __doc__, D, f"D={D},H={H}", VARIANTS, build, nll_fns, "vectorised")
