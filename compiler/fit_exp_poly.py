#!/usr/bin/env python3
"""The coefficients of vecmath.c's SIG_P: e^r ~ 1 + r + r^2 P(r) on |r| <= ln2/2,
P of degree DEG, fitted to e^r's relative error by Lawson's iteration
(weighted least squares whose weights move to where the error is largest,
which converges to the minimax fit). Needs mpmath (Debian: python3-mpmath).

    python3 compiler/fit_exp_poly.py [DEG]     # default 3, as vecmath.c uses
"""
import math
import sys

import mpmath as mp

mp.mp.dps = 30
HALF_LN2 = math.log(2) / 2


def fit(deg, nodes=120, iters=60):
    xs = [HALF_LN2 * mp.cos(mp.pi * (k + 0.5) / nodes) for k in range(nodes)]
    w = [mp.mpf(1) / nodes] * nodes
    for _ in range(iters):
        a, b = mp.matrix(nodes, deg + 1), mp.matrix(nodes, 1)
        for i, x in enumerate(xs):
            s = mp.sqrt(w[i]) / mp.e**x          # relative error: weight 1/e^x
            for j in range(deg + 1):
                a[i, j] = x ** (2 + j) * s
            b[i] = (mp.e**x - 1 - x) * s
        c = mp.lu_solve(a.T * a, a.T * b)
        err = [abs(1 + x + sum(c[j] * x ** (2 + j) for j in range(deg + 1)) - mp.e**x) / mp.e**x for x in xs]
        tot = sum(wi * e for wi, e in zip(w, err))
        w = [wi * e / tot for wi, e in zip(w, err)]
    grid = [-HALF_LN2 + 2 * HALF_LN2 * k / 4000 for k in range(4001)]
    worst = max(abs(1 + x + sum(c[j] * x ** (2 + j) for j in range(deg + 1)) - mp.e**x) / mp.e**x for x in grid)
    return [float(c[j]) for j in reversed(range(deg + 1))], float(worst)


if __name__ == "__main__":
    coeffs, worst = fit(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    print("P, highest first:", ", ".join(repr(c) for c in coeffs))
    print("worst relative error of 1 + r + r^2 P(r) on |r| <= ln2/2: %.3g" % worst)
