/* The op-case table: one tiny graph per differentiable op (and the rarer
 * forms of the rules), shared by tests/test_autodiff.c (gradients against
 * finite differences) and tests/test_engines.c (interp, naive and fused
 * agree on each graph and its gradient, so every lowering is run).
 *
 * Each case's first fn is the one checked. The graphs are written for
 * aj_gradcheck's data (parameters ~ N(0, 0.5^2), f32 inputs 0/1, i32 inputs
 * 0/1): arguments of log and sqrt stay positive (through exp), and the kinks
 * of relu, maximum and max stay further than the finite-difference step
 * from every value (KINK_GAP, SEPARATED). */
#ifndef ARJIT_TESTS_OP_CASES_H
#define ARJIT_TESTS_OP_CASES_H

typedef struct {
    const char *name;   /* what the case covers */
    const char *dims;   /* bindings for aj_bind_parse */
    const char *src;    /* a module whose first fn is checked */
} gcase;

/* Kinks kept away from the step: gap = (2x - 1)(q^2 + 0.1) is at least
 * 0.1 = 10 steps from 0, with a sign the data picks, and differentiable in q. */
#define KINK_GAP                  \
    "  sg = mul(x, 2)\n"          \
    "  sgn = add(sg, -1)\n"       \
    "  q2 = square(q)\n"          \
    "  q3 = add(q2, 0.1)\n"       \
    "  gap = mul(sgn, q3)\n"

#define HEAD_BD "dim B\ndim D = 4\nparam p : f32[D]\nparam q : f32[D]\n"

/* y = op(u), u = pre(x + p); loss mean(y^2) */
#define UNARY(op, pre) \
    {#op, "B=3", HEAD_BD "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n" pre "  y = " #op "(u)\n  l = square(y)\nend\n"}
#define ANY "  u = add(a, -0.6)\n"   /* both signs */
#define POS "  u = exp(a)\n"         /* positive, for log and sqrt */

/* op with every broadcast: [D] op [B, D], [B, D] op [D], [B, 1] op [B, D],
 * [B, D] op [B, 1]; operands positive (div). */
#define BINARY(op)                                                                                  \
    {#op " (broadcasting)", "B=3",                                                                  \
     HEAD_BD "fn loss(x : f32[B, D]) -> l\n"                                                        \
             "  a = add(x, p)\n  e = exp(a)\n  f = exp(q)\n  r = sum(e, axis=1, keepdims=1)\n"      \
             "  y1 = " #op "(f, e)\n  y2 = " #op "(e, f)\n  y3 = " #op "(r, e)\n  y4 = " #op "(e, r)\n" \
             "  y = concat(y1, y2, y3, y4, axis=1)\n  l = square(y)\nend\n"}

/* Reductions over v [B, C, D] with an axis list, keepdims and all axes, the
 * four results broadcast together. */
#define REDUCE(op, values)                                                                         \
    {#op " (axes, keepdims, all)", "B=2",                                                          \
     "dim B\ndim C = 3\ndim D = 4\ndim N = 24\nparam p : f32[C, D]\n"                              \
     "fn loss(x : f32[B, C, D]) -> l\n" values                                                     \
     "  y1 = " #op "(v, axis=1)\n  y2 = " #op "(v, axis=[0, 2], keepdims=1)\n  y3 = " #op "(v)\n"  \
     "  y4 = " #op "(v, axis=-1, keepdims=1)\n"                                                    \
     "  z1 = add(y2, y4)\n  z2 = add(z1, y3)\n  y1u = unsqueeze(y1, axis=1)\n  z = add(z2, y1u)\n" \
     "  l = square(z)\nend\n"}
#define SMOOTH "  v = add(x, p)\n"
/* For max: ramp * 0.3 * (+-1 from the data) + 0.1 tanh(x + p), 24 distinct
 * magnitudes 0.3 apart, so every reduction has one winner by a margin of at
 * least 0.1 = 10 steps. (Only max gets these: their large constant part
 * would drown the smooth ops' small gradients in the loss's rounding.) */
#define SEPARATED                                                                                \
    "  io = mask(kind=lower, shape=[N, N])\n  ramp = sum(io, axis=1)\n"                           \
    "  rr = reshape(ramp, shape=[B, C, D])\n  sg = mul(x, 0.6)\n  sgn = add(sg, -0.3)\n"          \
    "  big = mul(rr, sgn)\n  a = add(x, p)\n  t = tanh(a)\n  small = mul(t, 0.1)\n"               \
    "  v = add(big, small)\n"

/* a [B, M, K] (ta: [B, K, M]) times q [K, N] (tb: [N, K]), q's batch broadcast */
#define MATMUL(ta, tb, pshape, qshape)                                                          \
    {"matmul ta=" #ta " tb=" #tb, "B=2",                                                          \
     "dim B\ndim M = 2\ndim K = 3\ndim N = 4\nparam p : f32" pshape "\nparam q : f32" qshape "\n" \
     "fn loss(x : f32[B, 1, 1]) -> l\n  a = add(x, p)\n  c = matmul(a, q, ta=" #ta ", tb=" #tb ")\n" \
     "  l = square(c)\nend\n"}

#define SOFTMAX(op)                                                                        \
    {#op " (last axis, axis 0)", "B=3",                                                    \
     HEAD_BD "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n  y1 = " #op "(a)\n"           \
             "  y2 = " #op "(a, axis=0)\n  y = concat(y1, y2, axis=1)\n  l = square(y)\nend\n"}

/* A small RNN: carry h from a parameter, slices of the data and of a
 * parameter (per-step bias c: its adjoint is stacked), parameters U, W used
 * in the body (their adjoints summed over steps), the stacked states and the
 * final carry both in the loss. */
#define RNN(rev)                                                                                \
    {"recurrence (rnn, reverse=" #rev ")", "B=2",                                               \
     "dim B\ndim T = 4\ndim D = 3\ndim H = 2\n"                                                 \
     "param U : f32[D, H]\nparam W : f32[H, H]\nparam c : f32[T, H]\nparam h0 : f32[H]\n"       \
     "fn loss(x : f32[B, T, D]) -> l\n"                                                         \
     "  hb = broadcast(h0, shape=[B, H])\n"                                                     \
     "  hT, hs = recurrence(steps=T, reverse=" #rev ") {\n"                                     \
     "    carry h = hb\n    slice xt = x, axis=1\n    slice ct = c, axis=0\n    use W\n"        \
     "    a = matmul(xt, U)\n    r = matmul(h, W)\n    s1 = add(a, r)\n    s2 = add(s1, ct)\n"  \
     "    hn = tanh(s2)\n    next h = hn\n    stack hn, axis=1\n  }\n"                          \
     "  sq = square(hs)\n  st = sum(sq, axis=[1, 2])\n  f = sum(hT, axis=1)\n  l = add(st, f)\nend\n"}

static const gcase cases[] = {
    /* elementwise, unary */
    UNARY(neg, ANY), UNARY(exp, ANY), UNARY(log, POS), UNARY(tanh, ANY), UNARY(sigmoid, ANY),
    UNARY(softplus, ANY), UNARY(sqrt, POS), UNARY(square, ANY), UNARY(gelu, ANY), UNARY(sin, ANY), UNARY(cos, ANY),
    /* relu's kink: u = gap (|u| >= 0.1, both signs); the negative entries
     * must get exactly no gradient */
    {"relu (away from 0)", "B=3",
     HEAD_BD "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n" KINK_GAP "  y = relu(gap)\n  z = mul(y, a)\n"
             "  l = square(z)\nend\n"},

    /* elementwise, binary */
    BINARY(add), BINARY(sub), BINARY(mul), BINARY(div),
    /* maximum(f, f + gap) and maximum(r + gap, r): never a tie, each side
     * wins somewhere, with the same broadcasts as above */
    {"maximum (broadcasting)", "B=3",
     HEAD_BD "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n" KINK_GAP
             "  f = exp(p)\n  r = sum(a, axis=1, keepdims=1)\n  fg = add(f, gap)\n  rg = add(r, gap)\n"
             "  y1 = maximum(f, fg)\n  y2 = maximum(fg, f)\n  y3 = maximum(r, rg)\n  y4 = maximum(rg, r)\n"
             "  y = concat(y1, y2, y3, y4, axis=1)\n  l = square(y)\nend\n"},

    /* reductions */
    REDUCE(sum, SMOOTH), REDUCE(mean, SMOOTH), REDUCE(max, SEPARATED), REDUCE(logsumexp, SMOOTH),

    /* matmul: the transposes, a batch axis broadcast on either side */
    MATMUL(0, 0, "[M, K]", "[K, N]"), MATMUL(1, 0, "[K, M]", "[K, N]"),
    MATMUL(0, 1, "[M, K]", "[N, K]"), MATMUL(1, 1, "[K, M]", "[N, K]"),
    {"matmul (batch on b, a broadcast)", "B=2",
     "dim B\ndim M = 2\ndim K = 3\ndim N = 4\nparam p : f32[M, K]\nparam q : f32[2, K, N]\n"
     "fn loss(x : f32[B, 1, 1, 1]) -> l\n  b = add(x, q)\n  c = matmul(p, b, tb=0)\n  l = square(c)\nend\n"},

    SOFTMAX(softmax), SOFTMAX(log_softmax),

    /* shape ops */
    {"reshape", "B=3",
     HEAD_BD "param w : f32[2, 2]\nfn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n"
             "  y = reshape(a, shape=[B, 2, 2])\n  z = mul(y, w)\n  l = square(z)\nend\n"},
    {"transpose (a 3-cycle)", "B=2",
     "dim B\ndim C = 3\ndim D = 4\nparam p : f32[C, D]\nparam w : f32[B, C]\n"
     "fn loss(x : f32[B, C, D]) -> l\n  a = add(x, p)\n  y = transpose(a, perm=[2, 0, 1])\n"
     "  z = mul(y, w)\n  l = square(z)\nend\n"},
    {"slice", "B=3",
     HEAD_BD "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n  y = slice(a, axis=1, start=1, end=3)\n"
             "  y0 = slice(a, axis=0, start=1, end=B)\n  s = sum(y0)\n  z = mul(y, s)\n  l = square(z)\nend\n"},
    {"concat (three, unequal)", "B=3",
     HEAD_BD "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n  t = tanh(a)\n  s = slice(a, axis=1, start=0, end=1)\n"
             "  y = concat(a, s, t, axis=-1)\n  w = mul(y, y)\n  l = mul(w, y)\nend\n"},
    {"broadcast", "B=3",
     "dim B\ndim C = 3\ndim D = 4\nparam p : f32[D]\nparam q : f32[C, 1]\n"
     "fn loss(x : f32[B, C, D]) -> l\n  bp = broadcast(p, shape=[B, C, D])\n  bq = broadcast(q, shape=[C, D])\n"
     "  y = add(bp, bq)\n  z = mul(y, x)\n  w = add(z, y)\n  l = square(w)\nend\n"},
    {"unsqueeze", "B=3",
     "dim B\ndim C = 3\ndim D = 4\nparam p : f32[D]\nparam q : f32[C, D]\n"
     "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n  y = unsqueeze(a, axis=1)\n  z = mul(y, q)\n  l = square(z)\nend\n"},
    /* embedding rows 0/1 of a 3-row table (row 2 must get zero), and a 1-d table */
    {"gather (embedding)", "B=2",
     "dim B\ndim T = 3\ndim V = 3\ndim E = 2\nparam emb : f32[V, E]\nparam v1 : f32[V]\n"
     "fn loss(t : i32[B, T]) -> l\n  e = gather(emb, t)\n  s = gather(v1, t)\n  su = unsqueeze(s, axis=-1)\n"
     "  y = mul(e, su)\n  z = add(y, e)\n  l = square(z)\nend\n"},
    /* argmax of the 0/1 data (ties: the lowest index wins) picks embedding
     * rows; the data alone decides the pick, so the gradient is gather's */
    {"argmax (ties) into an embedding", "B=2",
     "dim B\ndim T = 3\ndim K = 4\ndim E = 2\nparam emb : f32[K, E]\n"
     "fn loss(x : f32[B, T, K]) -> l\n  k = argmax(x)\n  e = gather(emb, k)\n  l = square(e)\nend\n"},
    {"shift", "B=3",
     HEAD_BD "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n  y1 = shift(a, axis=1)\n"
             "  y2 = shift(a, axis=-1, by=-2)\n  y3 = shift(a, axis=0, by=1)\n  y = concat(y1, y2, y3, axis=1)\n"
             "  z = add(y, 0.5)\n  l = square(z)\nend\n"},
    {"pad", "B=3",
     HEAD_BD "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n  y = pad(a, axis=1, before=1, after=2, value=0.5)\n"
             "  y2 = pad(y, axis=0, before=2)\n  l = square(y2)\nend\n"},
    {"skew, unskew", "B=2",
     "dim B\ndim H = 3\ndim W = 4\ndim W2 = 6\nparam p : f32[H, W]\nparam q : f32[H, W2]\n"
     "fn loss(x : f32[B, H, W]) -> l\n  a = add(x, p)\n  s = skew(a)\n  b = add(s, q)\n  u = unskew(b)\n"
     "  y = concat(s, u, axis=-1)\n  z = mul(y, y)\n  l = mul(z, y)\nend\n"},

    /* layer_norm: all three inputs from parameters */
    {"layer_norm", "B=3",
     HEAD_BD "param g : f32[D]\nparam b : f32[D]\nfn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n"
             "  y = layer_norm(a, g, b)\n  z = mul(y, q)\n  l = square(z)\nend\n"},

    /* losses, as log-likelihoods; every argument depends on parameters */
    {"bernoulli_nll", "B=3",
     HEAD_BD "param W : f32[D, D]\nfn loglik(x : f32[B, D]) -> ll\n  h = matmul(x, W)\n  z = add(h, p)\n"
             "  u = add(x, q)\n  t = sigmoid(u)\n  n1 = bernoulli_nll(z, x)\n  n2 = bernoulli_nll(z, t)\n"
             "  n = add(n1, n2)\n  s = sum(n, axis=1)\n  ll = neg(s)\nend\n"},
    {"categorical_nll", "B=2",
     "dim B\ndim T = 3\ndim D = 4\ndim K = 3\nparam W : f32[D, K]\nparam b : f32[K]\n"
     "fn loglik(x : f32[B, T, D], y : i32[B, T]) -> ll\n  h = matmul(x, W)\n  z = add(h, b)\n"
     "  n = categorical_nll(z, y)\n  s = sum(n, axis=1)\n  ll = neg(s)\nend\n"},
    {"gaussian_nll", "B=3",
     HEAD_BD "param r : f32[D]\nfn loglik(x : f32[B, D]) -> ll\n  xx = add(x, r)\n  mu = mul(x, p)\n"
             "  ls = mul(q, 0.5)\n  n = gaussian_nll(xx, mu, ls)\n  s = sum(n, axis=1)\n  ll = neg(s)\nend\n"},
    {"mog_nll", "B=2",
     "dim B\ndim D = 3\ndim K = 3\nparam r : f32[D]\nparam A : f32[D, K]\nparam M : f32[D, K]\nparam S : f32[D, K]\n"
     "fn loglik(x : f32[B, D]) -> ll\n  xx = add(x, r)\n  xk = unsqueeze(x, axis=2)\n"
     "  pi = add(xk, A)\n  mu = mul(xk, M)\n  mu2 = add(mu, M)\n  ls0 = mul(S, 0.5)\n"
     "  ls = broadcast(ls0, shape=[B, D, K])\n  n = mog_nll(xx, pi, mu2, ls)\n  s = sum(n, axis=1)\n"
     "  ll = neg(s)\nend\n"},

    /* attention: self (causal or not, 2 heads) and cross with Ev != E */
    {"attention (heads=2)", "B=2",
     "dim B\ndim T = 3\ndim E = 4\nparam wq : f32[E, E]\nparam wk : f32[E, E]\nparam wv : f32[E, E]\n"
     "fn loss(x : f32[B, T, E]) -> l\n  q = matmul(x, wq)\n  k = matmul(x, wk)\n  v = matmul(x, wv)\n"
     "  o = attention(q, k, v, heads=2)\n  l = square(o)\nend\n"},
    {"attention (heads=2, causal)", "B=2",
     "dim B\ndim T = 3\ndim E = 4\nparam wq : f32[E, E]\nparam wk : f32[E, E]\nparam wv : f32[E, E]\n"
     "fn loss(x : f32[B, T, E]) -> l\n  q = matmul(x, wq)\n  k = matmul(x, wk)\n  v = matmul(x, wv)\n"
     "  o = attention(q, k, v, heads=2, causal=1)\n  l = square(o)\nend\n"},
    {"attention (cross, Ev != E)", "B=2",
     "dim B\ndim T = 3\ndim S = 2\ndim E = 4\ndim F = 6\nparam wq : f32[E, E]\nparam wk : f32[E, E]\n"
     "param wv : f32[E, F]\nfn loss(x : f32[B, T, E], y : f32[B, S, E]) -> l\n  q = matmul(x, wq)\n"
     "  k = matmul(y, wk)\n  v = matmul(y, wv)\n  o = attention(q, k, v, heads=2)\n  l = square(o)\nend\n"},

    /* convolutions: gradients for the image and the kernel; a masked tap
     * must get exactly zero. H != W and kh != kw catch swapped axes. */
    {"conv2d (no mask, 3x5 kernel)", "B=2",
     "dim B\ndim C = 2\ndim O = 3\ndim H = 4\ndim W = 5\nparam p : f32[C, H, W]\nparam w : f32[O, C, 3, 5]\n"
     "fn loss(x : f32[B, C, H, W]) -> l\n  a = add(x, p)\n  y = conv2d(a, w)\n  l = square(y)\nend\n"},
    {"conv2d (mask A)", "B=2",
     "dim B\ndim C = 2\ndim O = 3\ndim H = 4\ndim W = 5\nparam p : f32[C, H, W]\nparam w : f32[O, C, 3, 3]\n"
     "fn loss(x : f32[B, C, H, W]) -> l\n  a = add(x, p)\n  y = conv2d(a, w, mask=A)\n  l = square(y)\nend\n"},
    {"conv2d (mask B)", "B=2",
     "dim B\ndim C = 2\ndim O = 3\ndim H = 4\ndim W = 5\nparam p : f32[C, H, W]\nparam w : f32[O, C, 5, 3]\n"
     "fn loss(x : f32[B, C, H, W]) -> l\n  a = add(x, p)\n  y = conv2d(a, w, mask=B)\n  l = square(y)\nend\n"},
    {"conv1d (same)", "B=2",
     "dim B\ndim C = 2\ndim O = 3\ndim T = 5\nparam p : f32[C, T]\nparam w : f32[O, C, 3]\n"
     "fn loss(x : f32[B, C, T]) -> l\n  a = add(x, p)\n  y = conv1d(a, w)\n  l = square(y)\nend\n"},
    {"conv1d (causal, even k)", "B=2",
     "dim B\ndim C = 2\ndim O = 3\ndim T = 5\nparam p : f32[C, T]\nparam w : f32[O, C, 2]\n"
     "fn loss(x : f32[B, C, T]) -> l\n  a = add(x, p)\n  y = conv1d(a, w, pad=causal)\n  l = square(y)\nend\n"},
    /* dilation: taps 2 (3) apart, some reaching past every edge (a 3x5
     * kernel at dilation 2 spans 5x9 over a 5x6 image) */
    {"conv2d (dilation 2, 3x5 kernel)", "B=2",
     "dim B\ndim C = 2\ndim O = 3\ndim H = 5\ndim W = 6\nparam p : f32[C, H, W]\nparam w : f32[O, C, 3, 5]\n"
     "fn loss(x : f32[B, C, H, W]) -> l\n  a = add(x, p)\n  y = conv2d(a, w, dilation=2)\n  l = square(y)\nend\n"},
    {"conv2d (mask B, dilation 2)", "B=2",
     "dim B\ndim C = 2\ndim O = 3\ndim H = 5\ndim W = 6\nparam p : f32[C, H, W]\nparam w : f32[O, C, 3, 3]\n"
     "fn loss(x : f32[B, C, H, W]) -> l\n  a = add(x, p)\n  y = conv2d(a, w, mask=B, dilation=2)\n  l = square(y)\nend\n"},
    {"conv1d (same, dilation 3)", "B=2",
     "dim B\ndim C = 2\ndim O = 3\ndim T = 5\nparam p : f32[C, T]\nparam w : f32[O, C, 3]\n"
     "fn loss(x : f32[B, C, T]) -> l\n  a = add(x, p)\n  y = conv1d(a, w, dilation=3)\n  l = square(y)\nend\n"},
    {"conv1d (causal, dilation 2)", "B=2",
     "dim B\ndim C = 2\ndim O = 3\ndim T = 7\nparam p : f32[C, T]\nparam w : f32[O, C, 3]\n"
     "fn loss(x : f32[B, C, T]) -> l\n  a = add(x, p)\n  y = conv1d(a, w, pad=causal, dilation=2)\n  l = square(y)\nend\n"},

    /* recurrences */
    RNN(0), RNN(1),
    /* the inner scan starts from the outer carry, slices the outer slice
     * and a parameter, and uses W from two levels up */
    {"recurrence (nested)", "B=2",
     "dim B\ndim T = 3\ndim D = 3\ndim H = 2\nparam U : f32[D, H]\nparam W : f32[H, H]\nparam h0 : f32[H]\n"
     "fn loss(x : f32[B, T, D]) -> l\n  hb = broadcast(h0, shape=[B, H])\n"
     "  hT, hs = recurrence(steps=T) {\n    carry h = hb\n    slice xt = x, axis=1\n"
     "    g, gs = recurrence(steps=D) {\n      carry u = h\n      slice xd = xt, axis=1\n      slice wd = U, axis=0\n"
     "      xc = unsqueeze(xd, axis=1)\n      m = mul(xc, wd)\n      u1 = add(u, m)\n      r = matmul(u1, W)\n"
     "      un = tanh(r)\n      next u = un\n      stack un, axis=1\n    }\n"
     "    gm = mean(gs, axis=1)\n    hn = add(g, gm)\n    next h = hn\n    stack g, axis=1\n  }\n"
     "  sq = square(hs)\n  f = sum(hT)\n  l = mul(sq, f)\nend\n"},
    /* k passes through unchanged (its adjoint sums the steps' uses of it);
     * a slice of a computed sequence; a carry from a constant that only the
     * body makes depend on parameters; a stacked output the loss ignores */
    {"recurrence (pass-through carry)", "B=2",
     "dim B\ndim T = 4\ndim H = 3\nparam k0 : f32[H]\nparam p : f32[T, H]\nparam W : f32[H, H]\n"
     "fn loss(x : f32[B, T, H]) -> l\n  kb = broadcast(k0, shape=[B, H])\n  z = constant(value=0, shape=[B, H])\n"
     "  a = add(x, p)\n  e = tanh(a)\n"
     "  hT, kT, hs, unused = recurrence(steps=T) {\n    carry h = z\n    carry k = kb\n    slice et = e, axis=1\n"
     "    r = matmul(h, W)\n    s = add(r, et)\n    s2 = mul(s, k)\n    hn = tanh(s2)\n"
     "    next h = hn\n    next k = k\n    stack hn, axis=1\n    stack s, axis=0\n  }\n"
     "  kh = mul(kT, hT)\n  f = sum(kh, axis=1)\n  g = sum(hs, axis=[1, 2])\n  l = add(f, g)\nend\n"},

    /* negative axes and the rarer forms of the rules above */
    {"negative axes (slice, pad, unsqueeze, transpose, softmax)", "B=2",
     "dim B\ndim C = 3\ndim D = 4\nparam p : f32[C, D]\n"
     "fn loss(x : f32[B, C, D]) -> l\n  a = add(x, p)\n  s = slice(a, axis=-2, start=1, end=C)\n"
     "  t = pad(s, axis=-2, before=1)\n  u = unsqueeze(t, axis=-1)\n  v = transpose(u, perm=[-1, 0, 2, 1])\n"
     "  w = softmax(v, axis=-2)\n  w1 = log_softmax(a, axis=1)\n  w2 = transpose(w1, perm=[0, -1, 1])\n"
     "  w3 = unsqueeze(w2, axis=0)\n  y = mul(w, w3)\n"
     "  l = square(y)\nend\n"},
    {"matmul (both batched, size-1 batch broadcast)", "B=2",
     "dim B\ndim M = 2\ndim K = 3\ndim N = 4\nparam p : f32[1, M, K]\nparam q : f32[K, N]\n"
     "fn loss(x : f32[B, K, 1]) -> l\n  b = add(x, q)\n  c = matmul(p, b)\n  l = square(c)\nend\n"},
    {"gather (rank-3 table), layer_norm (rank 3)", "B=2",
     "dim B\ndim T = 2\ndim V = 2\ndim E = 3\nparam emb : f32[V, 2, E]\nparam g : f32[E]\nparam b : f32[E]\n"
     "fn loss(t : i32[B, T]) -> l\n  e = gather(emb, t)\n  y = layer_norm(e, g, b)\n  z = mul(y, e)\n"
     "  l = square(z)\nend\n"},
    /* the Diagonal BiLSTM pattern: scan columns (slice/stack axis -1) of a
     * skewed map, no carry; a use computed outside (its adjoint flows on);
     * one parameter both sliced and used */
    {"recurrence (columns, computed use, no carry)", "B=2",
     "dim B\ndim H = 3\ndim W = 3\ndim W2 = 5\nparam p : f32[H, W]\nparam c : f32[W2]\n"
     "fn loss(x : f32[B, H, W]) -> l\n  a = add(x, p)\n  s = skew(a)\n  e = tanh(c)\n"
     "  ys = recurrence(steps=W2) {\n    slice col = s, axis=-1\n    slice ct = c, axis=0\n"
     "    m = mul(col, ct)\n    es = sum(e)\n    y = add(m, es)\n    z = tanh(y)\n    stack z, axis=-1\n  }\n"
     "  u = unskew(ys)\n  l = square(u)\nend\n"},

    /* fusion inside a step (compiler/fuse.c): hn is stored by the group of
     * the sum that reads it; y reads the old h after that group, so h
     * keeps two buffers (not updated in place); z, read by nothing, is
     * computed by y's group (sibling fusion) */
    {"recurrence (carry read after its update, sibling result)", "B=2",
     "dim B\ndim T = 4\ndim H = 3\nparam p : f32[T, H]\nparam w : f32[H]\nparam h0 : f32[H]\n"
     "fn loss(x : f32[B, T, H]) -> l\n  hb = broadcast(h0, shape=[B, H])\n  a = add(x, p)\n"
     "  hT, ys, zs = recurrence(steps=T) {\n    carry h = hb\n    slice at = a, axis=1\n"
     "    s = add(h, at)\n    hn = tanh(s)\n    m = sum(hn, axis=1)\n    mc = unsqueeze(m, axis=1)\n"
     "    y = mul(h, mc)\n    z = mul(h, w)\n    next h = hn\n    stack y, axis=1\n    stack z, axis=1\n  }\n"
     "  f = sum(ys, axis=[1, 2])\n  g = sum(zs, axis=[1, 2])\n  u = sum(hT, axis=1)\n  l1 = add(f, g)\n"
     "  l2 = add(l1, u)\n  l = square(l2)\nend\n"},

    /* body results that are leaves: the carry as the step found it, a
     * parameter used as is, a slice as is */
    {"recurrence (leaves stacked directly)", "B=2",
     "dim B\ndim T = 3\ndim H = 2\nparam h0 : f32[H]\nparam W : f32[H]\nparam p : f32[T, H]\n"
     "fn loss(x : f32[B, T, H]) -> l\n  hb = broadcast(h0, shape=[B, H])\n  a = add(x, p)\n"
     "  hT, hs, ws, as = recurrence(steps=T) {\n    carry h = hb\n    slice at = a, axis=1\n"
     "    m = mul(h, W)\n    s = add(m, at)\n    hn = tanh(s)\n    next h = hn\n"
     "    stack h, axis=1\n    stack W, axis=0\n    stack at, axis=-1\n  }\n"
     "  f = sum(hs, axis=[1, 2])\n  g = sum(ws)\n  k = square(as)\n  k2 = sum(k, axis=[1, 2])\n"
     "  u = sum(hT, axis=1)\n  l1 = add(f, g)\n  l2 = add(k2, u)\n  l3 = add(l1, l2)\n  l = square(l3)\nend\n"},

    /* a rank-3 carry normalised over its last axis each step (a stack of
     * LayerNorm layers as a recurrence): the mean's kernel hands out B*T
     * rows, the elementwise update B, so the step needs a barrier between
     * them; without it fused read other threads' unwritten means */
    {"recurrence (rank-3 carry, layer_norm and a mean over the last axis)", "B=3",
     "dim B\ndim T = 4\ndim E = 8\ndim L = 2\nparam g : f32[L, E]\nparam b : f32[E]\n"
     "fn loss(x : f32[B, T, E]) -> l\n  hL = recurrence(steps=L) {\n    carry h = x\n    slice gl = g, axis=0\n"
     "    next h = h + gl * (h - mean(h, axis=-1, keepdims=1)) + layer_norm(h, gl, b)\n  }\n"
     "  l = sum(hL * hL, axis=[1, 2])\nend\n"},

    /* one value read by several ops: the adjoints add up */
    {"value used several times", "B=3",
     HEAD_BD "fn loss(x : f32[B, D]) -> l\n  a = add(x, p)\n  y1 = mul(a, a)\n  y2 = tanh(a)\n"
             "  y = add(y1, y2)\n  z = mul(y, a)\n  w = sub(z, a)\n  l = mul(w, q)\nend\n"},
};

#endif
