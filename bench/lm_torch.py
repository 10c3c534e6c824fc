"""PyTorch reference for `cargo xtask bench lm`: the same Llama-style decoder as smalltalk-lm
(tied embeddings, pre-RMSNorm eps 1e-5, RoPE rotate-half theta 10000, SwiGLU, no biases), trained
with AdamW (0.9, 0.99, wd 0.1) and global-norm clipping, on random tokens of the same shape.

usage: python lm_torch.py --vocab 32000 --d-model 96 --layers 12 --heads 12 --d-ff 256 \
           --seq 256 --batch 32 --steps 3 [--threads 2] [--score-batch 1024 --score-prefix 32]
           [--device cuda --precision bf16]
--steps 0 skips training, --score-batch 0 skips scoring. `--precision bf16` is mixed precision as in
smalltalk (`--precision bf16`): f32 parameters and AdamW state, forward and backward under
`torch.autocast(dtype=torch.bfloat16)`. On cuda every timing synchronizes.
Prints one JSON object: per-step seconds, train tokens/s (best, median), scoring sequences/s.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads, d_ff, eps):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.RMSNorm(d, eps=eps)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.mlp_norm = nn.RMSNorm(d, eps=eps)
        self.gate = nn.Linear(d, d_ff, bias=False)
        self.up = nn.Linear(d, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d, bias=False)

    def forward(self, x, cos, sin):
        b, s, d = x.shape
        h = self.attn_norm(x)
        q, k, v = (p(h).view(b, s, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, d))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Lm(nn.Module):
    def __init__(self, vocab, d, layers, heads, d_ff, max_seq, eps=1e-5, theta=10000.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(d, heads, d_ff, eps) for _ in range(layers))
        self.norm = nn.RMSNorm(d, eps=eps)
        hd = d // heads
        inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
        ang = torch.outer(torch.arange(max_seq).float(), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, ids):
        s = ids.shape[1]
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x, self.cos[:s], self.sin[:s])
        return self.norm(x) @ self.embed.weight.T


def main():
    p = argparse.ArgumentParser()
    for name, default in [("vocab", 32000), ("d-model", 96), ("layers", 12), ("heads", 12), ("d-ff", 256),
                          ("seq", 256), ("batch", 32), ("steps", 3), ("threads", 2),
                          ("score-batch", 1024), ("score-prefix", 32), ("score-reps", 3)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["full", "f32", "bf16"], default="full")
    a = p.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Lm(a.vocab, a.d_model, a.layers, a.heads, a.d_ff, max(a.seq, a.score_prefix))
    model = model.to(device=dev)
    autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq + 1), device=dev)
    step_seconds = []
    for step in range(a.steps + 1 if a.steps > 0 else 0):  # the first step warms up and is not counted
        sync()
        t = time.perf_counter()
        with autocast():
            logits = model(ids[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, a.vocab).float(), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        sync()
        if step > 0:
            step_seconds.append(time.perf_counter() - t)
    tokens = a.batch * a.seq
    score_seconds = []
    if a.score_batch > 0:
        sids = torch.randint(0, a.vocab, (a.score_batch, a.score_prefix), device=dev)
        with torch.no_grad():
            for rep in range(a.score_reps + 1):
                sync()
                t = time.perf_counter()
                with autocast():
                    logits = model(sids[:, :-1])
                logp = F.log_softmax(logits.float(), dim=-1)
                score = logp.gather(-1, sids[:, 1:, None]).squeeze(-1).sum(-1)
                assert score.shape == (a.score_batch,) and math.isfinite(float(score.sum()))
                if rep > 0:
                    score_seconds.append(time.perf_counter() - t)
    out = {
        "torch": torch.__version__, "threads": a.threads, "device": a.device, "precision": a.precision,
        "params": sum(p.numel() for p in model.parameters()), "step_seconds": step_seconds,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if step_seconds:
        out["tokens_per_s_best"] = tokens / min(step_seconds)
        out["tokens_per_s_median"] = tokens / statistics.median(step_seconds)
    out["score_seconds"] = score_seconds
    if score_seconds:
        out["sequences_per_s_best"] = a.score_batch / min(score_seconds)
        out["sequences_per_s_median"] = a.score_batch / statistics.median(score_seconds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
