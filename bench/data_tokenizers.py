"""Reference side of `cargo xtask bench data`: the Python `tokenizers` package on the same corpus
with the same tokenizer.json. Reads gzip JSON lines, encodes in parallel batches of ~8 MB of text
(as `smalltalk data build` does), appends the end-of-document id, and writes u16/u32 ids to a file.

usage: python data_tokenizers.py CORPUS.jsonl.gz TOKENIZER.json OUT.tokens
Prints one JSON object: seconds, tokens, peak_rss_bytes.
"""
import gzip
import json
import resource
import sys
import time
from array import array

from tokenizers import Tokenizer


def main(corpus, tokenizer_path, out_path):
    start = time.perf_counter()
    tok = Tokenizer.from_file(tokenizer_path)
    eos = tok.token_to_id("<|endoftext|>")
    code = "H" if tok.get_vocab_size(with_added_tokens=True) <= 65536 else "I"
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    tokens = 0
    opener = gzip.open if corpus.endswith(".gz") else open
    with opener(corpus, "rt", encoding="utf-8") as lines, open(out_path, "wb") as out:
        batch, size = [], 0

        def flush():
            nonlocal tokens
            ids = array(code)
            for enc in encode(batch, add_special_tokens=False):
                ids.extend(enc.ids)
                ids.append(eos)
            tokens += len(ids)
            ids.tofile(out)
            batch.clear()

        for line in lines:
            if not line.strip():
                continue
            text = json.loads(line)["text"]
            batch.append(text)
            size += len(text)
            if size >= 8 << 20:
                flush()
                size = 0
        if batch:
            flush()
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "tokens": tokens, "peak_rss_bytes": rss}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
