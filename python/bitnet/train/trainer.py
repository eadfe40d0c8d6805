"""The training loop: AdamW, linear warmup + cosine decay, timestamped logs, checkpoints.

One process, one thread by default (``torch.set_num_threads``). The loop tolerates being paused
(SIGSTOP/SIGCONT): the learning-rate schedule follows ``max(step / steps, wall / max_wall)``, so a
run that loses wall time to pauses or to a busy machine compresses its schedule and still ends
with a fully decayed learning rate by ``max_minutes``. The log records both counters.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .model import BitNetLM, ModelConfig

__all__ = ["TrainConfig", "load_run", "perplexity", "save_run", "train"]

LossFn = Callable[[BitNetLM, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    max_minutes: float = 0.0  # 0: no wall-clock limit
    eval_every: int = 250
    log_every: int = 10
    seed: int = 0


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Warmup over warmup_steps, then cosine from lr to lr * min_lr_ratio as progress -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, progress)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def sample_batch(
    stream: torch.Tensor, cfg: TrainConfig, bos: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs (B, T) = BOS + stream[s : s+T-1], targets (B, T) = stream[s : s+T]."""
    t = cfg.seq_len
    starts = torch.randint(0, len(stream) - t, (cfg.batch_size,), generator=gen)
    tgt = torch.stack([stream[s : s + t] for s in starts.tolist()])  # (B, T)
    inp = torch.cat([torch.full((cfg.batch_size, 1), bos, dtype=tgt.dtype), tgt[:, :-1]], dim=1)
    return inp, tgt


def cross_entropy(
    model: BitNetLM, inp: torch.Tensor, tgt: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model(inp)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
    return loss, {"ce": float(loss.detach())}


@torch.no_grad()
def perplexity(model: BitNetLM, ids: list[int], window: int = 256, stride: int = 128) -> float:
    """exp(mean NLL) with the engine's protocol (``bitnet.Model.perplexity``): ids start with
    BOS; windows of `window` tokens every `stride` tokens; each token scored once, by the first
    window that reaches it; the first token is never scored."""
    was_training = model.training
    model.eval()
    x = torch.tensor(ids, dtype=torch.long)
    n = len(ids)
    nll, count, scored, start = 0.0, 0, 1, 0
    while scored < n:
        end = min(start + window, n)
        logp = F.log_softmax(model(x[None, start:end])[0].float(), dim=-1)  # (w, vocab)
        pos = torch.arange(max(scored, start + 1), end)
        nll -= float(logp[pos - start - 1, x[pos]].sum())
        count += len(pos)
        scored = end
        start += stride
    model.train(was_training)
    return math.exp(nll / count)


def save_run(model: BitNetLM, out: Path, extra: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"config": model.cfg.to_dict(), "state": model.state_dict(), **extra}, out / "model.pt"
    )


def load_run(path: Path) -> BitNetLM:
    """The model of a run directory (or a model.pt file) written by save_run."""
    f = path / "model.pt" if path.is_dir() else path
    data = torch.load(f, map_location="cpu", weights_only=True)
    model = BitNetLM(ModelConfig(**data["config"]))
    model.load_state_dict(data["state"])
    return model


class Logger:
    """Writes timestamped lines to stdout and log.txt, and JSON records to log.jsonl."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.txt = (out / "log.txt").open("a", encoding="utf-8")
        self.jsonl = (out / "log.jsonl").open("a", encoding="utf-8")

    def __call__(self, msg: str, **record: Any) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} {msg}"
        print(line, flush=True)
        self.txt.write(line + "\n")
        self.txt.flush()
        if record:
            self.jsonl.write(json.dumps({"time": stamp, **record}) + "\n")
            self.jsonl.flush()


def train(
    model: BitNetLM,
    stream: torch.Tensor,
    val_ids: list[int],
    cfg: TrainConfig,
    out: Path,
    *,
    loss_fn: LossFn = cross_entropy,
    log: Logger | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains model on random windows of the token stream; returns the summary it also saves."""
    log = log or Logger(out)
    gen = torch.Generator().manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim == 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    bos = model.cfg.bos_token_id
    log(
        f"start: {model.n_params()} parameters, quant={model.cfg.quant}, "
        f"sub_norms={model.cfg.sub_norms}, {cfg}",
        event="start",
        params=model.n_params(),
        model=model.cfg.to_dict(),
        train=asdict(cfg),
    )
    t0 = time.time()
    c0 = time.process_time()
    tokens = 0
    last_t, last_tokens = t0, 0
    step = 0
    evals: list[dict[str, float]] = []
    model.train()
    for step in range(cfg.steps):
        wall = time.time() - t0
        progress = max(step / cfg.steps, wall / (cfg.max_minutes * 60) if cfg.max_minutes else 0.0)
        if progress >= 1.0:
            log(f"wall-clock budget reached at step {step}", event="budget", step=step)
            break
        lr = lr_at(cfg, step, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        inp, tgt = sample_batch(stream, cfg, bos, gen)
        loss, parts = loss_fn(model, inp, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        tokens += inp.numel()
        if (step + 1) % cfg.log_every == 0:
            now = time.time()
            tps = (tokens - last_tokens) / max(now - last_t, 1e-9)
            last_t, last_tokens = now, tokens
            desc = " ".join(f"{k} {v:.4f}" for k, v in parts.items())
            log(
                f"step {step + 1}/{cfg.steps} loss {float(loss.detach()):.4f} ({desc}) lr {lr:.2e} "
                f"gnorm {gnorm:.2f} tokens {tokens} {tps:.0f} tok/s wall {now - t0:.0f}s",
                event="step",
                step=step + 1,
                loss=float(loss.detach()),
                **parts,
                lr=lr,
                gnorm=gnorm,
                tokens=tokens,
                tok_s=tps,
                wall_s=now - t0,
                cpu_s=time.process_time() - c0,
            )
        if (step + 1) % cfg.eval_every == 0:
            ppl = perplexity(model, val_ids, cfg.seq_len, cfg.seq_len // 2)
            evals.append({"step": step + 1, "tokens": tokens, "val_ppl": ppl})
            log(
                f"eval step {step + 1} val_ppl {ppl:.3f}",
                event="eval",
                step=step + 1,
                tokens=tokens,
                val_ppl=ppl,
            )
            save_run(model, out, {"step": step + 1})
    else:
        step = cfg.steps
    ppl = perplexity(model, val_ids, cfg.seq_len, cfg.seq_len // 2)
    summary: dict[str, Any] = {
        "steps": step,
        "tokens": tokens,
        "wall_s": time.time() - t0,
        "cpu_s": time.process_time() - c0,
        "val_ppl": ppl,
        "params": model.n_params(),
        "evals": evals,
        **(extra or {}),
    }
    log(
        f"done: val_ppl {ppl:.3f} after {tokens} tokens, {summary['wall_s']:.0f}s",
        event="done",
        **summary,
    )
    save_run(model, out, {"step": step, "summary": summary})
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
