"""A LLaMA-style BitNet decoder for training, laid out like microsoft/bitnet-b1.58-2B-4T.

Dataflow per layer (transformers' ``modeling_bitnet.py``; formats.md section 2.1):

    a = input_layernorm(h);  q, k, v = BitLinear(a);  q, k = RoPE(q, k)
    o = softmax(q k^T / sqrt(hd) + causal) v      (GQA: kv head = head // (H / KV))
    h = h + o_proj(attn_sub_norm(o))
    m = post_attention_layernorm(h)
    h = h + down_proj(ffn_sub_norm(relu(gate_proj(m))^2 * up_proj(m)))
    logits = norm(h) @ embed_tokens^T                   (tied embeddings)

Module names equal the Hugging Face ones, so ``state_dict()`` under the prefix ``model.`` is the
2B4T-bf16 checkpoint. Embeddings, norms and the (tied) output layer stay full precision.
A model built with ``sub_norms=False`` is the plain LLaMA variant (a full-precision starting point
for BitDistill, which inserts the sub-norms later with :meth:`BitNetLM.insert_sub_norms`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .bitlinear import BitLinear, Quant

__all__ = ["BitNetLM", "ModelConfig", "RMSNorm"]


@dataclass
class ModelConfig:
    """Hyperparameters; field names follow the Hugging Face config.json keys."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    max_position_embeddings: int = 256
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    bos_token_id: int = 1
    eos_token_id: int = 2
    quant: Quant = "ternary"  # "ternary", "binary" or "none" (full precision)
    sub_norms: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class RMSNorm(nn.Module):
    """weight * x / sqrt(mean(x^2) + eps), computed in float32 (BitNetRMSNorm)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))  # (dim,)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(cfg: ModelConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n, head_dim) in the rotate_half convention (pairs i, i + hd/2)."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.outer(torch.arange(n, dtype=torch.float32), inv_freq)  # (n, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (n, hd)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, T, hd) rotated by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hd, h, kv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
        self.n_heads, self.n_kv, self.head_dim = h, kv, hd
        self.q_proj = BitLinear(cfg.hidden_size, h * hd, cfg.quant)  # W: (H*hd, dim)
        self.k_proj = BitLinear(cfg.hidden_size, kv * hd, cfg.quant)  # W: (KV*hd, dim)
        self.v_proj = BitLinear(cfg.hidden_size, kv * hd, cfg.quant)  # W: (KV*hd, dim)
        self.o_proj = BitLinear(h * hd, cfg.hidden_size, cfg.quant)  # W: (dim, H*hd)
        self.attn_sub_norm: nn.Module = (
            RMSNorm(h * hd, cfg.rms_norm_eps) if cfg.sub_norms else nn.Identity()
        )
        # (q, k, v) of the last forward, (B, heads, T, hd) each, when capture is set (distillation)
        self.capture = False
        self.captured: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.capture:
            self.captured = (q, k, v)
        rep = self.n_heads // self.n_kv
        o = F.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1), is_causal=True
        )  # (B, H, T, hd)
        o = o.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        out: torch.Tensor = self.o_proj(self.attn_sub_norm(o))  # (B, T, dim)
        return out


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = BitLinear(d, f, cfg.quant)  # W: (ffn, dim)
        self.up_proj = BitLinear(d, f, cfg.quant)  # W: (ffn, dim)
        self.down_proj = BitLinear(f, d, cfg.quant)  # W: (dim, ffn)
        self.ffn_sub_norm: nn.Module = (
            RMSNorm(f, cfg.rms_norm_eps) if cfg.sub_norms else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(
            self.ffn_sub_norm(F.relu(self.gate_proj(x)).square() * self.up_proj(x))
        )
        return out


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        out: torch.Tensor = h + self.mlp(self.post_attention_layernorm(h))
        return out


class Decoder(nn.Module):
    """The ``model.`` part of the Hugging Face checkpoint."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)  # (vocab, dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class BitNetLM(nn.Module):
    """BitNet causal LM with tied embeddings. ``forward(ids)`` returns logits (B, T, vocab)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        cos, sin = rope_tables(cfg, cfg.max_position_embeddings)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_pos, hd)
        self.register_buffer("rope_sin", sin, persistent=False)  # (max_pos, hd)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) embeddings and linear weights (output projections scaled by depth)."""
        out_std = std / math.sqrt(2 * self.cfg.num_hidden_layers)
        for name, p in self.named_parameters():
            if p.ndim == 1:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=out_std)
            else:
                nn.init.normal_(p, std=std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        cos, sin = cast(torch.Tensor, self.rope_cos)[:t], cast(torch.Tensor, self.rope_sin)[:t]
        h = self.model.embed_tokens(ids)  # (B, T, dim)
        for layer in self.model.layers:
            h = layer(h, cos, sin)
        return F.linear(self.model.norm(h), self.model.embed_tokens.weight)  # (B, T, vocab)

    def attention(self, layer: int) -> Attention:
        """The attention module of one layer (for capturing Q, K, V)."""
        attn = self.model.layers[layer].self_attn
        assert isinstance(attn, Attention)
        return attn

    def set_quant(self, quant: Quant) -> None:
        """Switches every BitLinear to ternary, binary or full-precision forward."""
        self.cfg.quant = quant
        for m in self.modules():
            if isinstance(m, BitLinear):
                m.quant = quant

    def insert_sub_norms(self) -> None:
        """Adds the attention and FFN sub-norms (weight 1) before o_proj and down_proj (BitDistill)."""
        if self.cfg.sub_norms:
            return
        self.cfg.sub_norms = True
        dev = self.model.embed_tokens.weight.device
        for layer in self.model.layers:
            assert isinstance(layer, DecoderLayer)
            layer.self_attn.attn_sub_norm = RMSNorm(
                self.cfg.num_attention_heads * self.cfg.head_dim, self.cfg.rms_norm_eps
            ).to(dev)
            layer.mlp.ffn_sub_norm = RMSNorm(self.cfg.intermediate_size, self.cfg.rms_norm_eps).to(
                dev
            )

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
