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


def check_ckpt(args, torch, variants):
    p = build(torch)
    meta = common.load_ckpt_into(args.ckpt, torch, p, "nade")
    path = args.data or common.find_data("binarized_mnist_test.amat")
    xs = torch.from_numpy(common.load_amat(path, limit=args.limit, d=D))
    out = {"model": "nade", "ckpt": args.ckpt, "ckpt_dims": meta.get("dims"),
           "data": path, "n": xs.shape[0], "threads": args.threads, "nll": {}}
    fns = nll_fns(torch, p)
    # the same function in float64: how far float32 rounding alone moves it
    p64 = {k: v.detach().double() for k, v in p.items()}
    fns["loop_f64"] = nll_fns(torch, p64)["loop"]
    for v in variants + ["loop_f64"]:
        chunk = 100 if v == "vectorised" else 1000   # [chunk, D, H] floats for vectorised
        total = 0.0
        with torch.no_grad():
            for s in range(0, xs.shape[0], chunk):
                x = xs[s:s + chunk]
                if v.endswith("f64"):
                    x = x.double()
                total += float(fns[v](x).double().sum())
        out["nll"][v] = round(total / xs.shape[0], 6)
    common.report(out)


def main():
    args, torch = common.parse_args("nade", VARIANTS, __doc__)
    variants = VARIANTS if args.variant == "all" else [args.variant]
    if args.ckpt:
        return check_ckpt(args, torch, variants)
    x, data = common.batch_x(args, torch, D)
    out = common.header(args, torch, "nade", f"D={D},H={H}", data)
    out["variants"] = {}
    for v in variants:
        torch.manual_seed(args.seed)
        p = build(torch)
        step = common.train_step_fn(torch, list(p.values()), x, nll_fns(torch, p)[v], args.lr)
        out["variants"][v] = common.time_steps(torch, step, args.steps)
    best = min(out["variants"], key=lambda v: out["variants"][v]["ms_median"])
    out["best"] = best
    out["ms_median"] = out["variants"][best]["ms_median"]
    common.report(out)


if __name__ == "__main__":
    main()
