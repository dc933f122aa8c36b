"""Ancestral sampling of models/gpt.graph's GPT in eager PyTorch with a
key/value cache: the baseline of bench/sample_gpt.sh.

Same model as the graph file: V=65 bytes, T=64, E=128, 4 layers, 4 heads,
pre-LayerNorm blocks, GELU MLP, token 0 before the first position. Each
step feeds one token, appends its keys and values to each layer's cache and
attends over the cache; one categorical draw per position. Prints the ms
per sample of every round after a warm-up one.

  python3 bench/pytorch/gpt_sample.py [--length 63] [--batch 1] [--rounds 5] [--threads 1]
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F

V, T, E, L, HEADS = 65, 64, 128, 4, 4


class GPT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        n = lambda *s: torch.nn.Parameter(torch.randn(*s) * 0.02)
        self.wte, self.wpe = n(V, E), n(T, E)
        self.g1, self.b1 = torch.nn.Parameter(torch.ones(L, E)), torch.nn.Parameter(torch.zeros(L, E))
        self.Wqkv, self.Wo = n(L, E, 3 * E), n(L, E, E)
        self.g2, self.b2 = torch.nn.Parameter(torch.ones(L, E)), torch.nn.Parameter(torch.zeros(L, E))
        self.W1, self.c1 = n(L, E, 4 * E), torch.nn.Parameter(torch.zeros(L, 4 * E))
        self.W2, self.c2 = n(L, 4 * E, E), torch.nn.Parameter(torch.zeros(L, E))
        self.gf, self.bf = torch.nn.Parameter(torch.ones(E)), torch.nn.Parameter(torch.zeros(E))
        self.Wout = n(E, V)

    def step(self, tok, t, cache):
        """logits of position t given the token before it (tok: [B]); cache[l] = (K, V) so far"""
        h = self.wte[tok] + self.wpe[t]                       # [B, E]
        B, dh = h.shape[0], E // HEADS
        for l in range(L):
            q, k, v = (F.layer_norm(h, (E,), self.g1[l], self.b1[l]) @ self.Wqkv[l]).split(E, dim=-1)
            K, Vc = cache[l]
            K = torch.cat([K, k.view(B, HEADS, 1, dh)], 2)
            Vc = torch.cat([Vc, v.view(B, HEADS, 1, dh)], 2)
            cache[l] = (K, Vc)
            s = (q.view(B, HEADS, 1, dh) @ K.transpose(2, 3)) / math.sqrt(dh)
            att = (s.softmax(-1) @ Vc).reshape(B, E)
            a = h + att @ self.Wo[l]
            h = a + F.gelu(F.layer_norm(a, (E,), self.g2[l], self.b2[l]) @ self.W1[l] + self.c1[l]) @ self.W2[l] + self.c2[l]
        return F.layer_norm(h, (E,), self.gf, self.bf) @ self.Wout

    @torch.no_grad()
    def sample(self, B, length):
        cache = [(torch.zeros(B, HEADS, 0, E // HEADS), torch.zeros(B, HEADS, 0, E // HEADS)) for _ in range(L)]
        tok, out = torch.zeros(B, dtype=torch.long), []
        for t in range(length):
            tok = torch.multinomial(self.step(tok, t, cache).softmax(-1), 1)[:, 0]
            out.append(tok)
        return torch.stack(out, 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--length", type=int, default=T - 1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    if a.length > T:
        p.error(f"--length is at most the block size {T}")
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    m = GPT()
    for r in range(a.rounds + 1):
        t0 = time.perf_counter()
        m.sample(a.batch, a.length)
        if r:
            print(f"pytorch {1e3 * (time.perf_counter() - t0):.2f} ms per sample")


if __name__ == "__main__":
    main()
