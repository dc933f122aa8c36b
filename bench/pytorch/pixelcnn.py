#!/usr/bin/python3
"""PixelCNN (models/pixelcnn.graph: 28x28, C=64, F=32, L=5 blocks) in eager
PyTorch, as a PyTorch user writes it: masked convolutions as F.conv2d of the
weight times its 0/1 mask (van den Oord et al. 2016, sections 3.4-3.5):

    h = conv_A^{7x7}(x) + bin
    h = h + conv^{1x1}(relu(conv_B^{3x3}(relu(conv^{1x1}(relu(h)) + b1)) + b3)) + b2   (L times)
    logit = conv^{1x1}(relu(conv^{1x1}(relu(h)) + bo1)) + bo2

log p(x) = -sum_i bernoulli_nll(logit_i, x_i); the loss is the mean NLL, as
arjit's train_step. Parameters and their init as the graph's, by the same
names, so --ckpt reads an arjit checkpoint. Use /usr/bin/python3 (Debian's
python3-torch).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

H = W = 28
D, C, Fh, L = H * W, 64, 32, 5
VARIANTS = ["vectorised"]


def build(torch):
    """The graph's parameters: normal(std) draws of its shapes."""
    shapes = {"Win": ([C, 1, 7, 7], 0.3), "bin": ([C, 1, 1], 0.1),
              "W1": ([L, Fh, C, 1, 1], 0.15), "b1": ([L, Fh, 1, 1], 0.1),
              "W3": ([L, Fh, Fh, 3, 3], 0.1), "b3": ([L, Fh, 1, 1], 0.1),
              "W2": ([L, C, Fh, 1, 1], 0.05), "b2": ([L, C, 1, 1], 0.1),
              "Wo1": ([C, C, 1, 1], 0.15), "bo1": ([C, 1, 1], 0.1),
              "Wo2": ([1, C, 1, 1], 0.15), "bo2": ([1, 1, 1], 0.1)}
    return {k: (torch.randn(*s) * std).requires_grad_() for k, (s, std) in shapes.items()}


def conv_mask(torch, k, kind):
    """mask A: the rows above the centre and the taps left of it; B: the centre too"""
    m = torch.zeros(k, k)
    m[:k // 2, :] = 1
    m[k // 2, :k // 2 + (kind == "B")] = 1
    return m


def nll_fns(torch, p):
    F = torch.nn.functional
    mA, mB = conv_mask(torch, 7, "A"), conv_mask(torch, 3, "B")

    def vectorised(x):
        img = x.view(-1, 1, H, W)
        h = F.conv2d(img, p["Win"] * mA, padding=3) + p["bin"]
        for k in range(L):
            a = F.relu(F.conv2d(F.relu(h), p["W1"][k]) + p["b1"][k])
            c = F.relu(F.conv2d(a, p["W3"][k] * mB, padding=1) + p["b3"][k])
            h = h + F.conv2d(c, p["W2"][k]) + p["b2"][k]
        o = F.conv2d(F.relu(F.conv2d(F.relu(h), p["Wo1"]) + p["bo1"]), p["Wo2"]) + p["bo2"]
        return F.binary_cross_entropy_with_logits(o.view(-1, D), x, reduction="none").sum(1)

    return {"vectorised": vectorised}


if __name__ == "__main__":
    common.run("pixelcnn", __doc__, D, f"H={H},W={W},C={C},F={Fh},L={L}", VARIANTS, build, nll_fns, "vectorised",
               chunk=lambda v: 100)
