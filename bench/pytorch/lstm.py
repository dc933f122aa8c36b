#!/usr/bin/python3
"""The LSTM language model of models/lstm.graph (V=65 bytes, E=64, H=256,
T=64) in eager PyTorch, two ways:

loop:   the graph's cell written out, in a Python loop over the T positions:
        z = x_{t-1} Wx + h_{t-1} Wh + bg, the four gates [i f g o] slices of
        z in that order, c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g),
        h_t = sigmoid(o) tanh(c_t); h_0 = c_0 = 0, x_0 = token 0 (the
        embedded inputs taken apart with unbind).
module: torch.nn.LSTM (batch_first), PyTorch's fused LSTM. Its gates are
        the graph's, in the same order (i, f, g, o): weight_ih is Wx^T,
        weight_hh Wh^T, bias_ih is bg; its second bias, bias_hh, is held at
        zero (not trained), so it computes the graph's function with the
        graph's trainable parameters.

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
    """The graph's parameters: emb ~ normal(0.1), Wx, Wh, Wo xavier (uniform), bg, bo zeros."""
    p = {"emb": torch.randn(V, E) * 0.1, "Wx": torch.empty(E, 4 * H), "Wh": torch.empty(H, 4 * H),
         "bg": torch.zeros(4 * H), "Wo": torch.empty(H, V), "bo": torch.zeros(V)}
    for k in ("Wx", "Wh", "Wo"):
        torch.nn.init.xavier_uniform_(p[k])   # l = sqrt(6 / (in + out)), as the graph's xavier
    return {k: v.requires_grad_() for k, v in p.items()}


def variant(torch, p, v):
    F = torch.nn.functional
    emb, Wx, Wh, bg, Wo, bo = (p[k] for k in ("emb", "Wx", "Wh", "bg", "Wo", "bo"))

    if v == "loop":
        def nll(x):
            et = F.embedding(common.shift_tokens(torch, x), emb)    # x_{t-1} embedded: [B, T, E]
            h = c = et.new_zeros(x.shape[0], H)
            hs = []
            for e in et.unbind(1):
                i, f, g, o = (e @ Wx + h @ Wh + bg).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                hs.append(h)
            return common.token_nll(torch, torch.stack(hs, 1) @ Wo + bo, x)
        return list(p.values()), nll, 0

    lstm = torch.nn.LSTM(E, H, batch_first=True).to(Wx.dtype)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(Wx.t())
        lstm.weight_hh_l0.copy_(Wh.t())
        lstm.bias_ih_l0.copy_(bg)
        lstm.bias_hh_l0.zero_()
    lstm.bias_hh_l0.requires_grad_(False)
    emb, Wo, bo = (t.detach().clone().requires_grad_() for t in (emb, Wo, bo))

    def nll(x):
        hs, _ = lstm(F.embedding(common.shift_tokens(torch, x), emb))
        return common.token_nll(torch, hs @ Wo + bo, x)
    trained = [emb, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, Wo, bo]
    return trained, nll, lstm.bias_hh_l0.numel()


if __name__ == "__main__":
    common.run_text("lstm", __doc__, V, T, f"V={V},E={E},H={H},T={T}", VARIANTS, build, variant, "loop")
