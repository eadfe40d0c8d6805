"""BitDistill (Wu et al. 2025) at small scale: full-precision teacher -> ternary student.

Stages, as in the paper:

1. Modelling refinement: the student starts as a copy of the full-precision model, with the
   sub-norms (``attn_sub_norm`` before o_proj, ``ffn_sub_norm`` before down_proj) inserted with
   weight 1, and its BitLinear layers switched to ternary weights.
2. Continued training with cross-entropy only (``continue_steps`` steps).
3. Distillation fine-tuning with

       loss = CE + logits_weight * KL(p_teacher^tau || p_student^tau) * tau^2
                 + attention_weight * sum over X in (Q, K, V) of KL(R_X^teacher || R_X^student)

   where R_X = softmax(X X^T / sqrt(head_dim)) (causally masked) is the scaled dot-product
   relation matrix of one layer's queries, keys or values, per head, and each KL is averaged over
   batch, heads and rows (MiniLM-style multi-head attention relation distillation).

One learning-rate schedule (warmup + cosine) spans stages 2 and 3.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .model import BitNetLM
from .trainer import Logger, TrainConfig, load_run, train

__all__ = ["bitdistill", "logits_kl", "relation_kl", "relation_matrix"]


def relation_matrix(x: torch.Tensor) -> torch.Tensor:
    """Log of softmax(x x^T / sqrt(d)) with a causal mask; x (B, heads, T, d) -> (B, heads, T, T)."""
    t, d = x.shape[-2], x.shape[-1]
    scores = (x.float() @ x.float().transpose(-1, -2)) / d**0.5
    mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
    return F.log_softmax(scores.masked_fill(mask, float("-inf")), dim=-1)


def relation_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(R_teacher || R_student) of one of Q, K, V, averaged over batch, heads and rows."""
    lt, ls = relation_matrix(teacher), relation_matrix(student)
    # masked entries are -inf in both: their terms are 0 * (-inf - -inf); zero them explicitly
    terms = torch.where(torch.isfinite(lt), lt.exp() * (lt - ls), torch.zeros_like(lt))
    return terms.sum(-1).mean()


def logits_kl(teacher: torch.Tensor, student: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * KL(softmax(t / tau) || softmax(s / tau)), averaged over tokens."""
    v = teacher.shape[-1]
    lt = F.log_softmax(teacher.float().reshape(-1, v) / tau, dim=-1)
    ls = F.log_softmax(student.float().reshape(-1, v) / tau, dim=-1)
    return F.kl_div(ls, lt, log_target=True, reduction="batchmean") * tau * tau


class DistillLoss:
    """The loss of stages 2 and 3; counts its calls to know the stage."""

    def __init__(
        self,
        teacher: BitNetLM,
        layer: int,
        continue_steps: int,
        logits_weight: float,
        attention_weight: float,
        tau: float,
    ) -> None:
        self.teacher = teacher
        self.layer = layer
        self.continue_steps = continue_steps
        self.logits_weight = logits_weight
        self.attention_weight = attention_weight
        self.tau = tau
        self.calls = 0

    def __call__(
        self, student: BitNetLM, inp: torch.Tensor, tgt: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls += 1
        if self.calls <= self.continue_steps:
            s_logits = student(inp)
            ce = F.cross_entropy(s_logits.reshape(-1, s_logits.shape[-1]), tgt.reshape(-1))
            return ce, {"ce": float(ce.detach()), "ld": 0.0, "ad": 0.0}
        t_attn, s_attn = self.teacher.attention(self.layer), student.attention(self.layer)
        t_attn.capture = s_attn.capture = True
        try:
            with torch.no_grad():
                t_logits = self.teacher(inp)
            s_logits = student(inp)
            assert t_attn.captured is not None and s_attn.captured is not None
            ad = sum(
                (relation_kl(t, s) for t, s in zip(t_attn.captured, s_attn.captured, strict=True)),
                torch.zeros(()),
            )
        finally:
            t_attn.capture = s_attn.capture = False
            t_attn.captured = s_attn.captured = None
        ce = F.cross_entropy(s_logits.reshape(-1, s_logits.shape[-1]), tgt.reshape(-1))
        ld = logits_kl(t_logits, s_logits, self.tau)
        loss = ce + self.logits_weight * ld + self.attention_weight * ad
        return loss, {"ce": float(ce.detach()), "ld": float(ld.detach()), "ad": float(ad.detach())}


def make_student(teacher: BitNetLM) -> BitNetLM:
    """Stage 1: a ternary copy of the teacher with sub-norms inserted."""
    student = copy.deepcopy(teacher)
    student.insert_sub_norms()
    student.set_quant("ternary")
    for p in student.parameters():  # the teacher may be frozen; the copy must train
        p.requires_grad_(True)
    student.train()
    return student


def bitdistill(
    teacher_run: Path,
    stream: torch.Tensor,
    val_ids: list[int],
    cfg: TrainConfig,
    out: Path,
    *,
    continue_steps: int = 0,
    distill_layer: int = -1,
    logits_weight: float = 1.0,
    attention_weight: float = 1.0,
    temperature: float = 1.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs the three stages from a full-precision run directory; returns the summary."""
    teacher = load_run(teacher_run)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = make_student(teacher)
    layer = distill_layer % teacher.cfg.num_hidden_layers
    log = Logger(out)
    log(
        f"bitdistill: teacher {teacher_run} (quant={teacher.cfg.quant}), layer {layer}, "
        f"continue_steps {continue_steps}, logits_weight {logits_weight}, "
        f"attention_weight {attention_weight}, tau {temperature}"
    )
    loss = DistillLoss(teacher, layer, continue_steps, logits_weight, attention_weight, temperature)
    info = {
        "teacher": str(teacher_run),
        "distill_layer": layer,
        "continue_steps": continue_steps,
        "logits_weight": logits_weight,
        "attention_weight": attention_weight,
        "temperature": temperature,
        **(extra or {}),
    }
    return train(student, stream, val_ids, cfg, out, loss_fn=loss, log=log, extra=info)
