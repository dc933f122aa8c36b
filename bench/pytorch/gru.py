#!/usr/bin/python3
"""The GRU language model of models/gru.graph (V=65 bytes, E=64, H=256,
T=64) in eager PyTorch, two ways:

loop:   the graph's cell written out, in a Python loop over the T positions:
        [xr xz xn] = x_{t-1} Wx + bx, [hr hz hn] = h_{t-1} Wh + bh,
        r = sigmoid(xr + hr), z = sigmoid(xz + hz), n = tanh(xn + r hn),
        h_t = (1 - z) n + z h_{t-1}; h_0 = 0, x_0 = token 0 (the embedded
        inputs taken apart with unbind).
module: torch.nn.GRU (batch_first), PyTorch's fused GRU: the graph's gates
        are nn.GRU's, in its order (r, z, n), with both biases: weight_ih
        is Wx^T, weight_hh Wh^T, bias_ih bx, bias_hh bh. Nothing held fixed.

Both: logits = h_t Wo + bo, log p(x) = -sum_t categorical_nll(logits_t, x_t);
the loss is the mean NLL over the batch, as arjit's train_step. Parameters
and their init as the graph's, by the same names, so --ckpt reads an arjit
checkpoint. Use /usr/bin/python3 (Debian's python3-torch).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

V, E, H, T = 65, 64, 256, 64
VARIANTS = ["loop", "module"]


def build(torch):
    """The graph's parameters: emb ~ normal(0.1), Wx, Wh, Wo xavier (uniform), bx, bh, bo zeros."""
    p = {"emb": torch.randn(V, E) * 0.1, "Wx": torch.empty(E, 3 * H), "Wh": torch.empty(H, 3 * H),
         "bx": torch.zeros(3 * H), "bh": torch.zeros(3 * H), "Wo": torch.empty(H, V), "bo": torch.zeros(V)}
    for k in ("Wx", "Wh", "Wo"):
        torch.nn.init.xavier_uniform_(p[k])   # l = sqrt(6 / (in + out)), as the graph's xavier
    return {k: v.requires_grad_() for k, v in p.items()}


def variant(torch, p, v):
    F = torch.nn.functional
    emb, Wx, Wh, bx, bh, Wo, bo = (p[k] for k in ("emb", "Wx", "Wh", "bx", "bh", "Wo", "bo"))

    if v == "loop":
        def nll(x):
            et = F.embedding(common.shift_tokens(torch, x), emb)    # x_{t-1} embedded: [B, T, E]
            h = et.new_zeros(x.shape[0], H)
            hs = []
            for e in et.unbind(1):
                xr, xz, xn = (e @ Wx + bx).chunk(3, 1)
                hr, hz, hn = (h @ Wh + bh).chunk(3, 1)
                r = torch.sigmoid(xr + hr)
                z = torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
                hs.append(h)
            return common.token_nll(torch, torch.stack(hs, 1) @ Wo + bo, x)
        return list(p.values()), nll, 0

    gru = torch.nn.GRU(E, H, batch_first=True).to(Wx.dtype)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(Wx.t())
        gru.weight_hh_l0.copy_(Wh.t())
        gru.bias_ih_l0.copy_(bx)
        gru.bias_hh_l0.copy_(bh)
    emb, Wo, bo = (t.detach().clone().requires_grad_() for t in (emb, Wo, bo))

    def nll(x):
        hs, _ = gru(F.embedding(common.shift_tokens(torch, x), emb))
        return common.token_nll(torch, hs @ Wo + bo, x)
    return [emb, *gru.parameters(), Wo, bo], nll, 0


if __name__ == "__main__":
    common.run_text("gru", __doc__, V, T, f"V={V},E={E},H={H},T={T}", VARIANTS, build, variant, "loop")
