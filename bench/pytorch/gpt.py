#!/usr/bin/python3
"""The GPT of models/gpt.graph (V=65 bytes, T=64, E=128, L=4 pre-LayerNorm
blocks, 4 heads, MLP 4E) in eager PyTorch, two ways:

explicit: the graph's block written out, as a PyTorch user writes a small
          GPT (nanoGPT-style):
              qkv = LN1(h) Wqkv (one product, then q, k, v its thirds)
              a   = h + attention(q, k, v) Wo      causal, 4 heads, scale 1/sqrt(E/4)
              h'  = a + gelu(LN2(a) W1 + c1) W2 + c2
          with the masked softmax spelled out, and logits = LNf(h^L) Wout.
module:   the blocks as torch.nn.TransformerEncoderLayer (norm_first,
          batch_first, dropout 0, the same GELU, a causal float mask):
          in_proj_weight is Wqkv^T, out_proj.weight Wo^T, linear1 W1^T and
          c1, linear2 W2^T and c2; the two attention biases it has and the
          graph has not (in_proj_bias, out_proj.bias) are held at zero, not
          trained. Embeddings, final LayerNorm and Wout as in explicit.

h^0_t = wte[x_{t-1}] + wpe[t] (x_0: token 0); LayerNorm eps 1e-5 (biased
variance); GELU is the graph's gelu op, the tanh approximation
0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (docs/ir.md), i.e.
F.gelu(approximate="tanh"), not PyTorch's default erf form. log p(x) =
-sum_t categorical_nll(logits_t, x_t); the loss is the mean NLL over the
batch, as arjit's train_step. Parameters and their init as the graph's (per
layer ones stacked on a leading L axis), by the same names, so --ckpt reads
an arjit checkpoint. Use /usr/bin/python3 (Debian's python3-torch).
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

V, T, E, L, HEADS = 65, 64, 128, 4, 4
VARIANTS = ["explicit", "module"]


def build(torch):
    """The graph's parameters: weights ~ normal(0.02), LayerNorm gains ones, biases zeros."""
    n = lambda *s: torch.randn(*s) * 0.02   # noqa: E731
    p = {"wte": n(V, E), "wpe": n(T, E),
         "g1": torch.ones(L, E), "b1": torch.zeros(L, E),
         "Wqkv": n(L, E, 3 * E), "Wo": n(L, E, E),
         "g2": torch.ones(L, E), "b2": torch.zeros(L, E),
         "W1": n(L, E, 4 * E), "c1": torch.zeros(L, 4 * E),
         "W2": n(L, 4 * E, E), "c2": torch.zeros(L, E),
         "gf": torch.ones(E), "bf": torch.zeros(E), "Wout": n(E, V)}
    return {k: v.requires_grad_() for k, v in p.items()}


def variant(torch, p, v):
    F = torch.nn.functional
    gelu = lambda z: F.gelu(z, approximate="tanh")   # noqa: E731  the graph's gelu
    ln = lambda z, g, b: F.layer_norm(z, (E,), g, b, 1e-5)   # noqa: E731
    d = E // HEADS

    if v == "explicit":
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)   # True above the diagonal: masked

        def nll(x):
            B = x.shape[0]
            h = F.embedding(common.shift_tokens(torch, x), p["wte"]) + p["wpe"]
            for l in range(L):
                q, k, vv = (ln(h, p["g1"][l], p["b1"][l]) @ p["Wqkv"][l]).split(E, -1)
                q, k, vv = (t.view(B, T, HEADS, d).transpose(1, 2) for t in (q, k, vv))   # [B, heads, T, d]
                s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
                att = s.masked_fill(causal, float("-inf")).softmax(-1) @ vv
                a = h + att.transpose(1, 2).reshape(B, T, E) @ p["Wo"][l]
                h = a + gelu(ln(a, p["g2"][l], p["b2"][l]) @ p["W1"][l] + p["c1"][l]) @ p["W2"][l] + p["c2"][l]
            return common.token_nll(torch, ln(h, p["gf"], p["bf"]) @ p["Wout"], x)
        return list(p.values()), nll, 0

    dtype = p["Wqkv"].dtype
    blocks = torch.nn.ModuleList(
        torch.nn.TransformerEncoderLayer(E, HEADS, dim_feedforward=4 * E, dropout=0.0, activation=gelu,
                                         layer_norm_eps=1e-5, batch_first=True, norm_first=True)
        for _ in range(L)).to(dtype)
    frozen = 0
    with torch.no_grad():
        for l, blk in enumerate(blocks):
            blk.norm1.weight.copy_(p["g1"][l]), blk.norm1.bias.copy_(p["b1"][l])
            blk.self_attn.in_proj_weight.copy_(p["Wqkv"][l].t())
            blk.self_attn.out_proj.weight.copy_(p["Wo"][l].t())
            blk.norm2.weight.copy_(p["g2"][l]), blk.norm2.bias.copy_(p["b2"][l])
            blk.linear1.weight.copy_(p["W1"][l].t()), blk.linear1.bias.copy_(p["c1"][l])
            blk.linear2.weight.copy_(p["W2"][l].t()), blk.linear2.bias.copy_(p["c2"][l])
            for bias in (blk.self_attn.in_proj_bias, blk.self_attn.out_proj.bias):
                bias.zero_()
                bias.requires_grad_(False)
                frozen += bias.numel()
    mask = torch.zeros(T, T, dtype=dtype).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    q = {k: p[k].detach().clone().requires_grad_() for k in ("wte", "wpe", "gf", "bf", "Wout")}

    def nll(x):
        h = F.embedding(common.shift_tokens(torch, x), q["wte"]) + q["wpe"]
        for blk in blocks:
            h = blk(h, src_mask=mask)
        return common.token_nll(torch, ln(h, q["gf"], q["bf"]) @ q["Wout"], x)
    trained = list(q.values()) + [t for t in blocks.parameters() if t.requires_grad]
    return trained, nll, frozen


if __name__ == "__main__":
    common.run_text("gpt", __doc__, V, T, f"V={V},T={T},E={E},L={L}", VARIANTS, build, variant, "explicit",
                    chunk=250)
