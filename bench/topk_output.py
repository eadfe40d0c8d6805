"""The exact-top-k output layer against the full q8_0 output layer: rows recomputed exactly,
bytes read per token and time, for hidden states with a controlled margin between the top logit
and the rest (a trained model's confident predictions have a large margin; random weights have
none). Reports; never asserts (docs/benchmarks.md, "Exact top-k output layer").

    python bench/topk_output.py MODEL.gguf --k 1,40 --margins 0,4,8,16 --tokens 8 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bitnet import _core


def _hidden(w: np.ndarray, margin: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n hidden states whose logit for a random row is `margin` standard deviations (of the
    other logits) above a Gaussian background: x = noise + a * w_row."""
    n_vocab, n_embd = w.shape
    xs = []
    for _ in range(n):
        x = rng.standard_normal(n_embd)
        row = w[rng.integers(0, n_vocab)]
        std = float(np.std(w[rng.integers(0, n_vocab, 2048)] @ x))
        x = x + margin * std * row / float(row @ row)
        xs.append(x)
    return np.asarray(xs, np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model")
    p.add_argument("--k", default="1,40")
    p.add_argument("--margins", default="0,4,8,16")
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    model = _core.Model(args.model, "q8_0", "", "", True)
    info = _core.output_topk_info(model)
    n_vocab, n_embd = model.config["n_vocab"], model.config["n_embd"]
    names = {t["name"]: t for t in model.file.tensors()}
    name = "output.weight" if "output.weight" in names else "token_embd.weight"
    raw = model.file.tensor_bytes(name)
    if names[name]["type_name"] != "F16":
        raise SystemExit(f"{name} must be F16 for this benchmark")
    w = raw.view(np.float16).reshape(n_vocab, n_embd).astype(np.float32)
    row_bytes = info["q8_bytes"] / n_vocab
    rng = np.random.default_rng(0)
    print(
        f"{args.model}: q8_0 layer {info['q8_bytes'] / 1e6:.1f} MB/token, pre-pass "
        f"{info['pass_bytes'] / 1e6:.1f} MB/token ({8 * info['pass_bytes'] / (n_vocab * n_embd):.2f} "
        f"bits/weight); {args.tokens} tokens one at a time, {args.threads} threads"
    )
    print("| margin (std) | k | exact rows (median) | MB/token | ms/token top-k | ms/token q8_0 |")
    print("|---|---|---|---|---|---|")
    for margin in (float(m) for m in args.margins.split(",")):
        x = _hidden(w, margin, args.tokens, rng)
        for k in (int(v) for v in args.k.split(",")):
            t_top, t_full, exact = [], [], []
            for _ in range(args.reps):
                for i in range(args.tokens):
                    xi = x[i : i + 1]
                    s = time.perf_counter()
                    _, n = _core.output_logits(model, xi, k=k, n_threads=args.threads)
                    t_top.append(time.perf_counter() - s)
                    s = time.perf_counter()
                    _core.output_logits(model, xi, n_threads=args.threads)
                    t_full.append(time.perf_counter() - s)
                    exact.append(int(n[0]))
            med = statistics.median(exact)
            mb = (info["pass_bytes"] + med * row_bytes) / 1e6
            print(
                f"| {margin:g} | {k} | {med:.0f} ({100 * med / n_vocab:.2f}%) | {mb:.1f} | "
                f"{1e3 * statistics.median(t_top):.2f} | {1e3 * statistics.median(t_full):.2f} |"
            )


if __name__ == "__main__":
    main()
