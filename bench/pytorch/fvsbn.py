#!/usr/bin/python3
"""FVSBN (models/fvsbn.graph: D=784) in eager PyTorch.

All D logistic regressions as one masked matrix product, as the graph:
logit = x @ (W * strict_lower_mask).T + b, log p(x) = -sum_i
bernoulli_nll(logit_i, x_i). The loss is the mean NLL, as arjit's
train_step. There is no per-pixel loop to compare: the graph has none
either. Use /usr/bin/python3 (Debian's python3-torch).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

D = 784
VARIANTS = ["vectorised"]


def build(torch):
    """The graph's parameters and their init: W = 0, b = 0."""
    return {"W": torch.zeros(D, D, requires_grad=True), "b": torch.zeros(D, requires_grad=True)}


def nll_fns(torch, p):
    F = torch.nn.functional
    W, b = p["W"], p["b"]
    mask = torch.tril(torch.ones(D, D, dtype=W.dtype), diagonal=-1)   # m_ij = 1 where j < i

    def vectorised(x):
        logit = x @ (W * mask).t() + b              # b_i + sum_{j<i} W_ij x_j
        return F.binary_cross_entropy_with_logits(logit, x, reduction="none").sum(1)

    return {"vectorised": vectorised}


if __name__ == "__main__":
    common.run("fvsbn", __doc__, D, f"D={D}", VARIANTS, build, nll_fns, "vectorised")
