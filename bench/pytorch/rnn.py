#!/usr/bin/python3
"""The tanh RNN language model of models/rnn.graph (V=65 bytes, E=64, H=256,
T=64) in eager PyTorch, two ways:

loop:   the graph's cell written out, in a Python loop over the T positions:
        h_t = tanh(x_{t-1} Wx + h_{t-1} Wh + b), h_0 = 0, x_0 = token 0
        (the embedded inputs taken apart with unbind, whose backward is one
        stack rather than T zero-filled slices of the input gradient).
module: torch.nn.RNN (tanh, batch_first), the fused kernel PyTorch has for
        this cell. Its weight_ih is Wx^T, weight_hh Wh^T, bias_ih is b; its
        second bias, bias_hh, is held at zero (not trained), so it computes
        the graph's function with the graph's trainable parameters.

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
    """The graph's parameters: emb ~ normal(0.1), Wx, Wh, Wo xavier (uniform), b, bo zeros."""
    p = {"emb": torch.randn(V, E) * 0.1, "Wx": torch.empty(E, H), "Wh": torch.empty(H, H),
         "b": torch.zeros(H), "Wo": torch.empty(H, V), "bo": torch.zeros(V)}
    for k in ("Wx", "Wh", "Wo"):
        torch.nn.init.xavier_uniform_(p[k])   # l = sqrt(6 / (in + out)), as the graph's xavier
    return {k: v.requires_grad_() for k, v in p.items()}


def variant(torch, p, v):
    F = torch.nn.functional
    emb, Wx, Wh, b, Wo, bo = (p[k] for k in ("emb", "Wx", "Wh", "b", "Wo", "bo"))

    if v == "loop":
        def nll(x):
            et = F.embedding(common.shift_tokens(torch, x), emb)    # x_{t-1} embedded: [B, T, E]
            h = et.new_zeros(x.shape[0], H)
            hs = []
            for e in et.unbind(1):
                h = torch.tanh(e @ Wx + h @ Wh + b)
                hs.append(h)
            return common.token_nll(torch, torch.stack(hs, 1) @ Wo + bo, x)
        return list(p.values()), nll, 0

    rnn = torch.nn.RNN(E, H, nonlinearity="tanh", batch_first=True).to(Wx.dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(Wx.t())
        rnn.weight_hh_l0.copy_(Wh.t())
        rnn.bias_ih_l0.copy_(b)
        rnn.bias_hh_l0.zero_()
    rnn.bias_hh_l0.requires_grad_(False)
    emb, Wo, bo = (t.detach().clone().requires_grad_() for t in (emb, Wo, bo))

    def nll(x):
        hs, _ = rnn(F.embedding(common.shift_tokens(torch, x), emb))
        return common.token_nll(torch, hs @ Wo + bo, x)
    trained = [emb, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, Wo, bo]
    return trained, nll, rnn.bias_hh_l0.numel()


if __name__ == "__main__":
    common.run_text("rnn", __doc__, V, T, f"V={V},E={E},H={H},T={T}", VARIANTS, build, variant, "loop")
