#!/usr/bin/env python3
"""Check `smalltalk export hf` and `smalltalk import hf` against the real transformers.

Usage: parity.py SMALLTALK RUN_DIR CORPUS.jsonl[.gz] WORK_DIR

1. Exports RUN_DIR with `SMALLTALK export hf` and loads every folder with AutoTokenizer and
   AutoModelForCausalLM. On one text of every corpus domain (code, German, French included):
   token ids equal `smalltalk`'s; logits of every exported model within 1e-4 (fp32) of
   `smalltalk lm logits` on the run's own checkpoints; the expert that routing by hand with the
   exported routers picks equals `smalltalk route`'s; a greedy generation of 32 tokens by that
   expert equals `smalltalk generate --temperature 0`'s.
2. The other way: a small random LlamaConfig model saved with save_pretrained, imported with
   `SMALLTALK import hf`, gives the same logits in smalltalk as in transformers.
Exits non-zero on the first mismatch.
"""
import glob
import gzip
import json
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

TOL = 1e-4


def st(*args):
    out = subprocess.run([SMALLTALK, "--json", *args], check=True, capture_output=True, text=True)
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{") or l.startswith("[")]


def latest(run_dir):
    return sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step-*")))[-1] + "/model.safetensors"


def samples(corpus):
    opener = gzip.open if corpus.endswith(".gz") else open
    seen = {}
    with opener(corpus, "rt") as f:
        for line in f:
            doc = json.loads(line)
            seen.setdefault(doc.get("domain", "?"), doc["text"][:400])
    return seen


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double()


def check_export(run, corpus, work):
    out = os.path.join(work, "export")
    card = st("export", "hf", run, out)[0]
    tok = AutoTokenizer.from_pretrained(os.path.join(out, card["routers"][0]))
    load = lambda name: AutoModelForCausalLM.from_pretrained(os.path.join(out, name), dtype=torch.float32).eval()
    routers = [load(n) for n in card["routers"]]
    experts = [load(n) for n in card["expert_models"]]
    ours = {n: latest(os.path.join(run, n.replace("routers/", "routers/").replace("experts/", "experts/")))
            for n in card["routers"] + card["expert_models"]}
    for name in card["dense"]:
        ours[name] = latest(os.path.join(run, "experts", name))
    models = dict(zip(card["routers"], routers)) | dict(zip(card["expert_models"], experts))
    models |= {n: load(n) for n in card["dense"]}
    tokenizer_json = os.path.join(run, "routers", "tokenizer.json")
    m = card["prefix_tokens"]
    worst = 0.0
    for domain, text in samples(corpus).items():
        ids = tok(text, add_special_tokens=False).input_ids
        for name, model in models.items():
            got = st("lm", "logits", "--weights", ours[name], "--tokenizer", tokenizer_json, "--text", text)[0]
            assert got["ids"] == ids, f"{domain}: token ids differ from smalltalk's ({name})"
            diff = (hf_logits(model, ids) - torch.tensor(got["logits"], dtype=torch.float64)).abs().max().item()
            worst = max(worst, diff)
            assert diff <= TOL, f"{domain}, {name}: logits differ by {diff:.2e}"
        prefix = ids[:m]
        scores = []
        for r in routers:
            logp = torch.log_softmax(hf_logits(r, prefix)[:-1], -1)
            scores.append(logp.gather(1, torch.tensor(prefix[1:])[:, None]).sum().item())
        by_hand = max(range(len(scores)), key=scores.__getitem__)
        routed = st("route", "--mixture", run, "--text", text, "--prefix", str(m))[0]
        assert routed["expert"] == by_hand, f"{domain}: routed to {routed['expert']}, by hand to {by_hand}"
        gen = st("generate", "--mixture", run,
                 "--prompt", text, "--prefix", str(m), "--max-tokens", "32", "--temperature", "0")[-1]
        with torch.no_grad():
            hf = experts[by_hand].generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        hf_new = hf[0, len(ids):].tolist()
        assert hf_new == gen["tokens"], f"{domain}: greedy generations differ:\n{hf_new}\n{gen['tokens']}"
        print(f"  {domain:12s} {len(ids):4d} tokens, expert {by_hand}, 32-token greedy generation equal")
    print(f"export: ids, routing and generations equal; largest logit difference {worst:.2e} (≤ {TOL})")


def check_import(work):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    hf_dir = os.path.join(work, "random-llama")
    model.save_pretrained(hf_dir, safe_serialization=True)
    ours = os.path.join(work, "random-llama.safetensors")
    st("import", "hf", hf_dir, ours)
    ids = [int(i) for i in torch.randint(0, 300, (40,))]
    got = st("lm", "logits", "--weights", ours, "--tokens", ",".join(map(str, ids)))[0]
    diff = (hf_logits(model, ids) - torch.tensor(got["logits"], dtype=torch.float64)).abs().max().item()
    assert diff <= TOL, f"imported random Llama: logits differ by {diff:.2e}"
    print(f"import: a random transformers Llama scores the same in smalltalk (largest difference {diff:.2e})")


if __name__ == "__main__":
    SMALLTALK, RUN, CORPUS, WORK = sys.argv[1:5]
    os.makedirs(WORK, exist_ok=True)
    check_export(RUN, CORPUS, WORK)
    check_import(WORK)
    print("parity with transformers: passed")
