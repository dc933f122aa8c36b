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


def check_ckpt(args, torch, variants):
    p = build(torch)
    meta = common.load_ckpt_into(args.ckpt, torch, p, "fvsbn")
    path = args.data or common.find_data("binarized_mnist_test.amat")
    xs = torch.from_numpy(common.load_amat(path, limit=args.limit, d=D))
    out = {"model": "fvsbn", "ckpt": args.ckpt, "ckpt_dims": meta.get("dims"),
           "data": path, "n": xs.shape[0], "threads": args.threads, "nll": {}}
    fns = nll_fns(torch, p)
    fns["vectorised_f64"] = nll_fns(torch, {k: v.detach().double() for k, v in p.items()})["vectorised"]
    for v in variants + ["vectorised_f64"]:
        total = 0.0
        with torch.no_grad():
            for s in range(0, xs.shape[0], 1000):
                x = xs[s:s + 1000]
                if v.endswith("f64"):
                    x = x.double()
                total += float(fns[v](x).double().sum())
        out["nll"][v] = round(total / xs.shape[0], 6)
    common.report(out)


def main():
    args, torch = common.parse_args("fvsbn", VARIANTS, __doc__)
    if args.ckpt:
        return check_ckpt(args, torch, VARIANTS)
    x, data = common.batch_x(args, torch, D)
    out = common.header(args, torch, "fvsbn", f"D={D}", data)
    out["variants"] = {}
    for v in VARIANTS:
        torch.manual_seed(args.seed)
        p = build(torch)
        step = common.train_step_fn(torch, list(p.values()), x, nll_fns(torch, p)[v], args.lr)
        out["variants"][v] = common.time_steps(torch, step, args.steps)
    out["best"] = "vectorised"
    out["ms_median"] = out["variants"]["vectorised"]["ms_median"]
    common.report(out)


if __name__ == "__main__":
    main()
