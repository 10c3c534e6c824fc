"""PyTorch reference for `cargo xtask bench matmul`: GFLOP/s of `F.linear(x, w)` (`x: [m, k]`,
`w: [n, k]`, as `nn.Linear` runs it) at given shapes, the same protocol as
`smalltalk lm bench --cases matmul` (random normal operands, one warm-up product, then --reps timed
products; best and median).

usage: python matmul_torch.py --shapes 8192x96x96,1024x96x4096 [--reps 5] [--threads 2]
Prints one JSON object: per shape m, k, n, seconds, gflops_best, gflops_median.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", required=True, help="comma-separated MxKxN")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    shapes = []
    for spec in a.shapes.split(","):
        m, k, n = (int(x) for x in spec.split("x"))
        x, w = torch.randn(m, k), torch.randn(n, k)
        seconds = []
        for rep in range(a.reps + 1):
            t = time.perf_counter()
            F.linear(x, w)
            if rep > 0:
                seconds.append(time.perf_counter() - t)
        flops = 2.0 * m * k * n
        shapes.append({"m": m, "k": k, "n": n, "seconds": seconds,
                       "gflops_best": flops / min(seconds) / 1e9,
                       "gflops_median": flops / statistics.median(seconds) / 1e9})
    print(json.dumps({"torch": torch.__version__, "threads": a.threads,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "shapes": shapes}))


if __name__ == "__main__":
    main()
