"""BitLinear for quantization-aware training: latent float weights, quantized forward.

The forward pass computes exactly what the engine computes at inference (formats.md section 1;
section 4 for binary weights), in fake-quantized float arithmetic:

    ternary (BitNet b1.58):  beta = mean|W|;  T = clamp(round(W / beta), -1, 1);  W_q = beta * T
    binary (BitNet, 2023):   alpha = mean W;  beta = mean|W|;  B = sign(W - alpha) (+1 if > 0
                             else -1);  W_q = beta * B
    activations (both):      s_x = 127 / max|x| per token;  X_q = clamp(round(x * s_x), -128, 127) / s_x
    output:                  y = X_q @ W_q^T

``round`` is torch.round (half to even), as the reference and the engine. Every rounding, sign and
clamp passes gradients straight through (STE: ``x + (q(x) - x).detach()``), so the latent weights
and the inputs receive the gradient of the quantized product as if quantization were the
identity. Scales are computed from the latent tensors and also pass their gradients through.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BitLinear",
    "Quant",
    "activation_quant",
    "binary_weight_quant",
    "ste",
    "ternary_weight_quant",
]

Quant = Literal["ternary", "binary", "none"]


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """q in the forward pass, the identity's gradient in the backward pass."""
    return x + (q - x).detach()


def ternary_weight_quant(w: torch.Tensor) -> torch.Tensor:
    """beta * clamp(round(w / beta), -1, 1) with beta = mean|w| (absmean, per tensor)."""
    w32 = w.float()
    s = 1.0 / w32.abs().mean().clamp(min=1e-5)
    return ((w32 * s).round().clamp(-1, 1) / s).to(w.dtype)


def binary_weight_quant(w: torch.Tensor) -> torch.Tensor:
    """beta * sign(w - mean w) with beta = mean|w|; sign(0) = -1 (per tensor)."""
    w32 = w.float()
    beta = w32.abs().mean()
    b = torch.where(w32 - w32.mean() > 0, 1.0, -1.0)
    return (b * beta).to(w.dtype)


def activation_quant(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax int8 fake quantization: clamp(round(x * s), -128, 127) / s."""
    x32 = x.float()
    s = 127.0 / x32.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return ((x32 * s).round().clamp(-128, 127) / s).to(x.dtype)


class BitLinear(nn.Linear):
    """nn.Linear without bias whose forward quantizes weights and input activations.

    Owns one latent float weight (out_features, in_features), updated by the optimizer.
    ``quant`` may be changed after construction (BitDistill turns a full-precision model into a
    ternary one this way); "none" is a plain full-precision linear layer.
    """

    def __init__(self, in_features: int, out_features: int, quant: Quant = "ternary") -> None:
        super().__init__(in_features, out_features, bias=False)
        self.quant: Quant = quant

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass multiplies with (beta * codes, or W itself)."""
        if self.quant == "ternary":
            return ternary_weight_quant(self.weight)
        if self.quant == "binary":
            return binary_weight_quant(self.weight)
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant == "none":
            return F.linear(x, self.weight)
        w = ste(self.weight, self.quantized_weight())
        return F.linear(ste(x, activation_quant(x)), w)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quant={self.quant}"
