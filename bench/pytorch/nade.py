#!/usr/bin/python3
"""NADE (models/nade.graph: D=784, H=500) in eager PyTorch, two ways.

loop:       the graph's recurrence as a PyTorch user writes it: a = c; for
            each i: h = sigmoid(a); logit_i = h @ V[i] + b[i];
            a = a + x[:, i:i+1] * W[i]. 784 small steps, each a few ops.
vectorised: every a_i at once with an exclusive cumulative sum over [B, D, H]:
            a = c + cumsum(x[:, :, None] * W, 1) - x[:, :, None] * W (the
            two [B, D, H] updates in place, logit by einsum: of the few
            spellings tried, the fastest; each [B, D, H] tensor is 157 MB
            at B = 100, so glibc's malloc maps and faults it in afresh every
            time unless --tuned-malloc).

Both give log p(x) = -sum_i bernoulli_nll(logit_i, x_i); the loss is the
mean NLL, as arjit's train_step. Use /usr/bin/python3 (Debian's
python3-torch).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

D, H = 784, 500
VARIANTS = ["loop", "vectorised"]


def build(torch):
    """The graph's parameters and their init: W, V ~ normal(0.01), b, c = 0."""
    W = (torch.randn(D, H) * 0.01).requires_grad_()
    V = (torch.randn(D, H) * 0.01).requires_grad_()
    b = torch.zeros(D, requires_grad=True)
    c = torch.zeros(H, requires_grad=True)
    return {"W": W, "V": V, "b": b, "c": c}


def nll_fns(torch, p):
    F = torch.nn.functional
    W, V, b, c = p["W"], p["V"], p["b"], p["c"]

    def loop(x):
        a = c.expand(x.shape[0], H)
        logits = []
        for i in range(D):
            h = torch.sigmoid(a)
            logits.append(h @ V[i] + b[i])          # b_i + V_i . h_i  : [B]
            a = a + x[:, i:i + 1] * W[i]            # a_{i+1} = a_i + x_i W_i
        logit = torch.stack(logits, 1)
        return F.binary_cross_entropy_with_logits(logit, x, reduction="none").sum(1)

    def vectorised(x):
        xw = x.unsqueeze(2) * W                     # x_j W_j : [B, D, H]
        a = torch.cumsum(xw, 1).sub_(xw).add_(c)    # c + sum_{j<i} x_j W_j, in place
        h = torch.sigmoid(a)
        logit = torch.einsum("bdh,dh->bd", h, V) + b   # b_i + V_i . h_i : [B, D]
        return F.binary_cross_entropy_with_logits(logit, x, reduction="none").sum(1)

    return {"loop": loop, "vectorised": vectorised}


if __name__ == "__main__":
    # vectorised holds [chunk, D, H] floats: 100 examples at a time
    common.run("nade", __doc__, D, f"D={D},H={H}", VARIANTS, build, nll_fns, "loop",
               chunk=lambda v: 100 if v == "vectorised" else 1000)
