"""Hugging Face `transformers` reference for `cargo xtask bench generate`: greedy `generate` with the
KV cache (the default) on the HF folder that `smalltalk lm bench-generate prepare` exported from our
weights (the same export `smalltalk export hf` writes), on the same prompts.

usage: python generate_hf.py --model DIR/hf --prompts DIR/prompts.json --batch 1,8 \
           --new-tokens 224 --threads 2 [--warmup-tokens 2]

Per batch: one untimed warm-up `generate` of --warmup-tokens tokens, then one timed `generate`
(`do_sample=False`, `min_new_tokens = max_new_tokens`, so EOS never ends it early). A
`LogitsProcessor` takes a timestamp each time `generate` hands it a step's logits, i.e. right
after the forward pass that yields the next token of every sequence: the first stamp minus the
start is the time to the first token (the prefill), the differences of later stamps are the decode
steps. Prints one JSON object: the versions and, per batch, `first_token_s`, `step_s` (seconds of
each step after the first token), `total_s` and the tokens of the first prompt.
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList


class StepTimer(LogitsProcessor):
    """Records `time.perf_counter()` at every generation step; leaves the scores alone."""

    def __init__(self):
        self.stamps = []

    def __call__(self, input_ids, scores):
        self.stamps.append(time.perf_counter())
        return scores


def run(model, ids, new_tokens, timer=None):
    processors = LogitsProcessorList([timer] if timer is not None else [])
    with torch.inference_mode():
        return model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            logits_processor=processors,
            pad_token_id=model.config.pad_token_id,
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--batch", default="1,8")
    p.add_argument("--new-tokens", type=int, default=224)
    p.add_argument("--warmup-tokens", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model.eval()
    with open(a.prompts) as f:
        prompts = json.load(f)
    cases = []
    for batch in (int(b) for b in a.batch.split(",")):
        ids = torch.tensor(prompts[:batch], dtype=torch.long)
        if a.warmup_tokens > 0:
            run(model, ids, a.warmup_tokens)
        timer = StepTimer()
        start = time.perf_counter()
        out = run(model, ids, a.new_tokens, timer)
        total = time.perf_counter() - start
        s = timer.stamps
        assert len(s) == a.new_tokens, f"{len(s)} steps for {a.new_tokens} tokens"
        assert out.shape == (batch, ids.shape[1] + a.new_tokens), out.shape
        cases.append({
            "batch": batch,
            "prompt_len": ids.shape[1],
            "new_tokens": a.new_tokens,
            "first_token_s": s[0] - start,
            "step_s": [b - a_ for a_, b in zip(s, s[1:])],
            "total_s": total,
            "tokens": out[0, ids.shape[1]:].tolist(),
        })
    print(json.dumps({
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "params": sum(t.numel() for t in model.parameters()),
        "cases": cases,
    }))


if __name__ == "__main__":
    main()
