"""Command line: ``python -m bitnet.train {data,pretrain,distill,export} ...``.

The whole recipe of the bundled model is models/train_default.sh; see docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _pid_file(path: str | None) -> None:
    """Appends this process id to path and removes it again at exit (lets others pause us)."""
    if not path:
        return
    import atexit
    import signal

    pid = str(os.getpid())
    p = Path(path)
    with p.open("a", encoding="utf-8") as f:
        f.write(pid + "\n")

    def remove() -> None:
        try:
            lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip() != pid]
            if lines:
                p.write_text("\n".join(lines) + "\n", encoding="utf-8")
            else:
                p.unlink()
        except OSError:
            pass

    atexit.register(remove)
    # SIGTERM ends the process through SystemExit, so that the pid is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _cmd_data(a: argparse.Namespace) -> None:
    import sentencepiece as spm
    import torch

    from .data import fetch_kjv, parse_kjv, split_chapters, train_tokenizer

    out = Path(a.out)
    raw = fetch_kjv(out / "download") if a.raw is None else Path(a.raw)
    chapters = parse_kjv(raw.read_text(encoding="utf-8"))
    train_ch, val_ch = split_chapters(chapters)
    tok = train_tokenizer(train_ch, a.vocab, out)
    sp = spm.SentencePieceProcessor(model_file=str(tok))
    stream = [i for ch in train_ch for i in sp.encode(ch)]
    torch.save(
        torch.tensor(stream, dtype=torch.int16 if a.vocab < 32768 else torch.int32),
        out / "train.pt",
    )
    val_text = " ".join(val_ch)
    (out / "val.txt").write_text(val_text, encoding="utf-8")
    val_ids = [sp.bos_id(), *sp.encode(val_text)]
    (out / "val_ids.json").write_text(json.dumps(val_ids))
    info = {
        "chapters": len(chapters),
        "train_chapters": len(train_ch),
        "val_chapters": len(val_ch),
        "train_chars": sum(map(len, train_ch)),
        "val_chars": len(val_text),
        "train_tokens": len(stream),
        "val_tokens": len(val_ids) - 1,
        "vocab_size": sp.get_piece_size(),
    }
    (out / "data.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def _load_data(path: str) -> tuple[Any, list[int], dict[str, Any]]:
    import torch

    d = Path(path)
    stream = torch.load(d / "train.pt").long()
    val_ids = json.loads((d / "val_ids.json").read_text())
    info = json.loads((d / "data.json").read_text())
    return stream, val_ids, info


def _train_config(a: argparse.Namespace) -> Any:
    from .trainer import TrainConfig

    return TrainConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        seq_len=a.seq_len,
        lr=a.lr,
        warmup_steps=a.warmup,
        weight_decay=a.weight_decay,
        max_minutes=a.max_minutes,
        eval_every=a.eval_every,
        seed=a.seed,
    )


def _cmd_pretrain(a: argparse.Namespace) -> None:
    import torch

    from .model import BitNetLM, ModelConfig
    from .trainer import train

    torch.manual_seed(a.seed)
    stream, val_ids, info = _load_data(a.data)
    cfg = ModelConfig(
        vocab_size=info["vocab_size"],
        hidden_size=a.dim,
        intermediate_size=a.ffn,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        max_position_embeddings=a.seq_len,
        quant=a.quant,
        sub_norms=not a.no_sub_norms,
    )
    train(BitNetLM(cfg), stream, val_ids, _train_config(a), Path(a.out), extra={"data": info})


def _cmd_distill(a: argparse.Namespace) -> None:
    import torch

    from .distill import bitdistill

    torch.manual_seed(a.seed)
    stream, val_ids, info = _load_data(a.data)
    bitdistill(
        Path(a.teacher),
        stream,
        val_ids,
        _train_config(a),
        Path(a.out),
        continue_steps=a.continue_steps,
        distill_layer=a.distill_layer,
        logits_weight=a.logits_weight,
        attention_weight=a.attention_weight,
        temperature=a.temperature,
        extra={"data": info},
    )


def _cmd_export(a: argparse.Namespace) -> None:
    from .export import export_hf
    from .trainer import load_run

    model = load_run(Path(a.run))
    export_hf(model, Path(a.out), tokenizer_dir=Path(a.tokenizer) if a.tokenizer else None)
    print(a.out)


PROMPTS = ("In the beginning", "And the LORD said unto Moses,", "Blessed are the", "The king")


def _engine_perplexity(engine: Any, ids: list[int], window: int, stride: int) -> float:
    """Model.perplexity's protocol on token ids: each token scored once, by the first window
    that reaches it; the first token (BOS) never."""
    import math

    import numpy as np

    nll, count, scored, start = 0.0, 0, 1, 0
    while scored < len(ids):
        end = min(start + window, len(ids))
        logits = np.asarray(engine.logits(ids[start:end]), dtype=np.float64)  # (w, vocab)
        m = logits.max(-1, keepdims=True)
        logp = logits - (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))
        for pos in range(max(scored, start + 1), end):
            nll -= logp[pos - start - 1, ids[pos]]
            count += 1
        scored = end
        start += stride
    return math.exp(nll / count)


def _cmd_evaluate(a: argparse.Namespace) -> None:
    import time

    import bitnet

    from .trainer import load_run, perplexity

    t0 = time.perf_counter()
    engine = bitnet.load(a.gguf, progress=False)
    load_s = time.perf_counter() - t0
    val_ids = json.loads((Path(a.data) / "val_ids.json").read_text())
    sample = (Path(a.data) / "val.txt").read_text(encoding="utf-8")[:2000].rsplit(" ", 1)[0]
    n = engine.n_ctx
    res: dict[str, Any] = {
        "gguf": str(a.gguf),
        "size_bytes": Path(a.gguf).stat().st_size,
        "load_s": load_s,
        # the engine's tokenizer agrees with the one training used (checked on a sample; the
        # whole text is scored from the training-time ids, in windows of the context)
        "engine_tokens_equal_training_tokens": engine.tokenize(sample)
        == val_ids[: len(engine.tokenize(sample))],
        "engine_val_ppl": _engine_perplexity(engine, val_ids, n, n // 2),
    }
    if a.run:
        res["torch_val_ppl"] = perplexity(load_run(Path(a.run)), val_ids, n, n // 2)
    t0 = time.perf_counter()
    engine.generate("In the beginning", max_tokens=30, temperature=0)
    res["generate_30_s"] = time.perf_counter() - t0
    res["greedy"] = {p: engine.generate(p, max_tokens=60, temperature=0) for p in PROMPTS}
    res["sampled"] = {
        p: engine.generate(p, max_tokens=60, temperature=0.8, top_k=40, top_p=0.95, seed=s)
        for s, p in enumerate(PROMPTS)
    }
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def _add_train_args(p: argparse.ArgumentParser, lr: float) -> None:
    p.add_argument("--data", required=True, help="directory written by `data`")
    p.add_argument("--out", required=True, help="run directory (logs, model.pt, summary.json)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--max-minutes", type=float, default=0.0, help="wall-clock budget (0: none)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pid-file", help="append our pid here while running")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bitnet.train", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("data", help="fetch the KJV, split it, train the tokenizer, tokenize")
    p.add_argument("--out", required=True)
    p.add_argument("--vocab", type=int, default=3072)
    p.add_argument("--raw", help="use this `bible` output instead of fetching it")

    p = sub.add_parser("pretrain", help="train a model from scratch")
    _add_train_args(p, 2e-3)
    p.add_argument("--quant", choices=("ternary", "binary", "none"), default="ternary")
    p.add_argument("--no-sub-norms", action="store_true", help="plain LLaMA blocks")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--ffn", type=int, default=768)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)

    p = sub.add_parser("distill", help="BitDistill a ternary student from a full-precision run")
    _add_train_args(p, 2e-3)
    p.add_argument("--teacher", required=True, help="run directory of the full-precision model")
    p.add_argument("--continue-steps", type=int, default=0, help="CE-only steps first (stage 2)")
    p.add_argument("--distill-layer", type=int, default=-1)
    p.add_argument("--logits-weight", type=float, default=1.0)
    p.add_argument("--attention-weight", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0)

    p = sub.add_parser("export", help="write a run as a Hugging Face BitNet checkpoint")
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", help="directory with tokenizer.model (default: none copied)")

    p = sub.add_parser("evaluate", help="engine perplexity, speed and samples of a GGUF file")
    p.add_argument("gguf")
    p.add_argument("--data", required=True)
    p.add_argument("--run", help="the run it was converted from (adds the torch perplexity)")
    p.add_argument("--out", required=True, help="JSON file to write")

    a = parser.parse_args(argv)
    if a.cmd in ("pretrain", "distill"):
        import torch

        torch.set_num_threads(a.threads)
        _pid_file(a.pid_file)
    commands = {
        "data": _cmd_data,
        "pretrain": _cmd_pretrain,
        "distill": _cmd_distill,
        "export": _cmd_export,
        "evaluate": _cmd_evaluate,
    }
    commands[a.cmd](a)


if __name__ == "__main__":
    main()
