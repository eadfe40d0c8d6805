"""Tiny Hugging Face checkpoints in the four BitNet layouts, and their reference logits.

Each builder writes a checkpoint directory exactly like the public repositories lay theirs out
(config.json, model.safetensors, tokenizer files) and returns the transformers model that serves
as the independent reference, loaded from that directory with transformers' own classes
(``from_pretrained``) and run in float32 with eager attention.

Initialisation follows ../shared/reference/formats.md section 5: linear weights
N(0, (1.5/sqrt(in))^2) (about 34/31/34 % of -1/0/+1 after absmean), norm weights U(0.5, 1.5)
so that every norm matters, embeddings N(0, 0.1^2).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # transformers' BitNet ops are torch.compile'd

import numpy as np

CORPUS = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    "Ternary weights take the values -1, 0 and +1; activations are quantized to 8 bits.",
    "Numbers like 1234567, 3.14159 and 2048 appear in text too.",
    "Café, naïve, façade, Zürich, São Paulo, Ελληνικά, русский, 中文, 日本語, 한국어.",
    "Emoji: 🙂🚀🎉 and symbols ∑∫√∞ ≠ ≤ ≥ © ® ™.",
    "Tabs\tand  double  spaces,\n\nnewlines, and trailing whitespace   ",
    "def main():\n    print('hello, world')\n    return 0\n",
    "She said: \"It's the model's job; we'll see what they've done.\"",
] * 3

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize + ': ' + message['content'] "
    "| trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)


@dataclass
class Fixture:
    """A checkpoint directory and the transformers reference model for it."""

    name: str
    path: Path
    reference: Any  # a transformers PreTrainedModel in float32
    vocab_size: int


# -- tokenizers --------------------------------------------------------------------------------


def write_bpe_tokenizer(out: Path, vocab_size: int = 420) -> int:
    """A byte-level BPE tokenizer with LLaMA-3's pre-tokenizer and special tokens; returns size."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok.add_special_tokens(specials)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|end_of_text|>",
                "chat_template": CHAT_TEMPLATE,
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": bos,
                "eos_token_id": [tok.token_to_id("<|end_of_text|>"), tok.token_to_id("<|eot_id|>")],
            }
        )
    )
    return int(tok.get_vocab_size())


def write_spm_tokenizer(out: Path, vocab_size: int = 400) -> int:
    """A LLaMA-2-style SentencePiece BPE model (byte fallback, <unk>/<s>/</s> = 0/1/2)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,  # as LLaMA-2's model (and llama.cpp, which never does)
        minloglevel=2,
        hard_vocab_limit=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
            }
        )
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    return int(sp.get_piece_size())


# -- weights -----------------------------------------------------------------------------------


def _init_weights(model: Any, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("embed_tokens.weight", "lm_head.weight")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif p.ndim == 1:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / p.shape[1] ** 0.5))


def _bf16_round(t: Any) -> Any:
    import torch

    return t.to(torch.bfloat16).to(torch.float32)


def absmean(w: Any) -> tuple[Any, Any]:
    """(codes, beta) of a float32 torch tensor, with the reference's own operations."""
    s = 1.0 / w.abs().mean().clamp_(min=1e-5)
    codes = (w * s).round().clamp(-1, 1)
    return codes, 1.0 / s


def _save(path: Path, tensors: dict[str, Any], config: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(path / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (path / "config.json").write_text(json.dumps(config, indent=1))


def _load_reference(path: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, attn_implementation="eager"
    )
    # Quantized models refuse .float(); offline-packed ones keep some buffers (weight_scale) in
    # their stored dtype, so cast every floating parameter and buffer by hand.
    for mod in model.modules():
        for name, buf in list(mod._buffers.items()):
            if buf is not None and buf.is_floating_point():
                mod._buffers[name] = buf.float()
        for p in mod._parameters.values():
            if p is not None and p.is_floating_point():
                p.data = p.data.float()
        if "dtype" in mod.__dict__:  # transformers' BitLinear unpacks weights to self.dtype
            mod.dtype = torch.float32
    model.eval()
    return model


def _bitnet_config(
    vocab: int, *, act: str, tie: bool, quant: dict[str, Any] | None, **dims: Any
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "hidden_act": act,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tie,
        "vocab_size": vocab,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "bfloat16",
    }
    cfg.update(dims)
    if quant is not None:
        cfg["quantization_config"] = quant
    return cfg


def _plain_bitnet(cfg: dict[str, Any], seed: int) -> Any:
    """A transformers BitNet model with plain nn.Linear layers holding master weights."""
    from transformers import BitNetConfig, BitNetForCausalLM

    c = {
        k: v
        for k, v in cfg.items()
        if k not in ("architectures", "quantization_config", "model_type", "torch_dtype")
    }
    model = BitNetForCausalLM(BitNetConfig(**c))
    _init_weights(model, seed)
    return model


def _linear_names(state: dict[str, Any]) -> list[str]:
    keys = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    return [k for k in state if k.endswith(".weight") and any(p in k for p in keys)]


def build_2b4t_pair(root: Path, seed: int = 1) -> tuple[Fixture, Fixture]:
    """The same random weights as 2B4T-bf16 (master weights) and as 2B4T packed (U8 + scale)."""
    import torch
    from transformers.integrations.bitnet import pack_weights

    tok_dir = root / "tok-bpe"
    vocab = write_bpe_tokenizer(tok_dir)
    cfg = _bitnet_config(
        vocab,
        act="relu2",
        tie=True,
        quant={
            "quant_method": "bitnet",
            "linear_class": "autobitlinear",
            "quantization_mode": "online",
        },
    )
    state = {
        k: _bf16_round(v)
        for k, v in _plain_bitnet(cfg, seed).state_dict().items()
        if k != "lm_head.weight"
    }

    bf16_dir = root / "2b4t-bf16"
    _save(bf16_dir, {k: v.to(torch.bfloat16) for k, v in state.items()}, cfg)
    _copy_tokenizer(tok_dir, bf16_dir)

    packed_cfg = dict(
        cfg,
        quantization_config={
            "quant_method": "bitnet",
            "linear_class": "autobitlinear",
            "quantization_mode": "offline",
        },
    )
    packed: dict[str, Any] = {}
    for k, v in state.items():
        if k in _linear_names(state):
            codes, beta = absmean(v)
            packed[k] = pack_weights(codes.to(torch.int8).clone())
            packed[k.replace(".weight", ".weight_scale")] = beta.reshape(1).to(torch.bfloat16)
        else:
            packed[k] = v.to(torch.bfloat16)
    packed_dir = root / "2b4t-packed"
    _save(packed_dir, packed, packed_cfg)
    _copy_tokenizer(tok_dir, packed_dir)
    return (
        Fixture("2b4t-bf16", bf16_dir, _load_reference(bf16_dir), vocab),
        Fixture("2b4t-packed", packed_dir, _load_reference(packed_dir), vocab),
    )


def build_1bitllm(root: Path, seed: int = 2) -> Fixture:
    """1bitLLM's layout: BitnetForCausalLM, F32 masters, inner_attn_ln / ffn_layernorm, SiLU,
    untied lm_head, a SentencePiece tokenizer and a vocabulary padded by 2 (like 32000 -> 32002).

    transformers has no class for this remote-code architecture; its math is transformers'
    BitNet with SiLU and online quantization, which serves as the reference (same weights, the
    sub-norms under their 2B4T names).
    """
    tok_dir = root / "tok-spm"
    n_pieces = write_spm_tokenizer(tok_dir)
    vocab = n_pieces + 2
    quant = {
        "quant_method": "bitnet",
        "linear_class": "autobitlinear",
        "quantization_mode": "online",
    }
    ref_cfg = _bitnet_config(
        vocab,
        act="silu",
        tie=False,
        quant=quant,
        bos_token_id=1,
        eos_token_id=2,
        num_key_value_heads=4,
        intermediate_size=384,
    )
    state = {k: v.float() for k, v in _plain_bitnet(ref_cfg, seed).state_dict().items()}
    ref_dir = root / "1bitllm-reference"
    _save(ref_dir, state, ref_cfg)

    renamed = {
        k.replace("self_attn.attn_sub_norm", "self_attn.inner_attn_ln").replace(
            "mlp.ffn_sub_norm", "mlp.ffn_layernorm"
        ): v
        for k, v in state.items()
    }
    cfg = {k: v for k, v in ref_cfg.items() if k != "quantization_config"}
    cfg.update(
        {
            "architectures": ["BitnetForCausalLM"],
            "model_type": "llama",
            "weight_bits": 1,
            "input_bits": 8,
            "torch_dtype": "float32",
        }
    )
    path = root / "1bitllm"
    _save(path, renamed, cfg)
    _copy_tokenizer(tok_dir, path)
    return Fixture("1bitllm", path, _load_reference(ref_dir), vocab)


def build_llama_bitlinear(root: Path, seed: int = 3) -> Fixture:
    """HF1BitLLM / Falcon3 layout: LlamaForCausalLM, U8 + weight_scale = 1/mean|W|, untied."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.integrations.bitnet import pack_weights

    tok_dir = root / "tok-bpe"
    vocab = write_bpe_tokenizer(tok_dir)
    dims = {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "vocab_size": vocab,
        "hidden_act": "silu",
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    model = LlamaForCausalLM(LlamaConfig(**dims))
    _init_weights(model, seed)
    state = {k: _bf16_round(v) for k, v in model.state_dict().items()}
    packed: dict[str, Any] = {}
    for k, v in state.items():
        if k in _linear_names(state):
            codes, beta = absmean(v)
            packed[k] = pack_weights(codes.to(torch.int8).clone())
            packed[k.replace(".weight", ".weight_scale")] = (
                (1.0 / beta).reshape(1).to(torch.bfloat16)
            )
        else:
            packed[k] = v.to(torch.bfloat16)
    cfg = dict(
        dims,
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        torch_dtype="bfloat16",
        quantization_config={"quant_method": "bitnet", "modules_to_not_convert": None},
    )
    path = root / "llama-bitlinear"
    _save(path, packed, cfg)
    _copy_tokenizer(tok_dir, path)
    return Fixture("llama-bitlinear", path, _load_reference(path), vocab)


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())


def reference_logits(model: Any, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long)).logits[0]
    return out.float().numpy()


def reference_greedy(model: Any, ids: list[int], n: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids], dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
            min_new_tokens=n,
            pad_token_id=0,
        )
    return [int(t) for t in out[0, len(ids) :]]


def assert_logits_close(ours: np.ndarray, ref: np.ndarray) -> None:
    """The acceptance of formats.md section 5, per position."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    for pos in range(ref.shape[0]):
        a, b = ours[pos].astype(np.float64), ref[pos].astype(np.float64)
        std = b.std()
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        diff = np.abs(a - b)
        assert cos >= 0.995, f"position {pos}: cosine {cos:.5f}"
        assert diff.mean() <= 0.05 * std, f"position {pos}: mean|diff| {diff.mean():.4g} > 0.05 std"
        assert diff.max() <= 0.3 * std, f"position {pos}: max|diff| {diff.max():.4g} > 0.3 std"
        top2 = np.sort(b)[-2:]
        if top2[1] - top2[0] >= 0.3 * std:
            assert int(a.argmax()) == int(b.argmax()), f"position {pos}: argmax differs"
