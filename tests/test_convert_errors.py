"""The converter on bad input: every config field, every malformed file, each ends in a
BitnetError subclass whose message names the file and the key (or tensor), expected and found.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bitnet
from bitnet.errors import BitnetError, FormatError, ParameterError, UnsupportedError


@pytest.fixture
def ckpt(hf_models, tmp_path) -> Path:
    """A private copy of the tiny 2B4T master-weight checkpoint (tied, BPE tokenizer)."""
    dst = tmp_path / "ckpt"
    shutil.copytree(hf_models["2b4t-bf16"].path, dst)
    return dst


def edit_config(src: Path, **changes: Any) -> None:
    path = src / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


_DELETE = object()


def convert_fails(src: Path, tmp_path: Path, cls: type[BitnetError], *names: str) -> str:
    """Converts src, expecting cls; the message names each of `names`. No output remains."""
    dst = tmp_path / "out.gguf"
    with pytest.raises(cls) as e:
        bitnet.convert(src, dst, progress=False)
    message = str(e.value)
    for name in names:
        assert name in message, (name, message)
    assert not dst.exists() and not list(tmp_path.glob(".out.gguf.*"))
    return message


# -- config.json, field by field ---------------------------------------------------------------

CONFIG_CASES = [
    ("hidden_size", "256", FormatError, "integer"),
    ("hidden_size", 2.5, FormatError, "integer"),
    ("hidden_size", True, FormatError, "integer"),
    ("hidden_size", -1, FormatError, "integer"),
    ("hidden_size", 10**12, FormatError, "integer"),
    ("hidden_size", 128, FormatError, "shape"),
    ("hidden_size", _DELETE, FormatError, "missing key"),
    ("num_attention_heads", 0, FormatError, "integer"),
    ("num_attention_heads", [4], FormatError, "integer"),
    ("num_key_value_heads", 3, FormatError, "multiple"),
    ("head_dim", 7, FormatError, "even"),
    ("num_hidden_layers", 10**9, FormatError, "2 layers"),
    ("num_hidden_layers", 1, FormatError, "2 layers"),
    ("num_hidden_layers", None, FormatError, "missing key"),
    ("intermediate_size", 400, FormatError, "shape"),
    ("intermediate_size", "512", FormatError, "integer"),
    ("max_position_embeddings", 10**12, FormatError, "integer"),
    ("max_position_embeddings", -5, FormatError, "integer"),
    ("rope_theta", 1e308, FormatError, "finite number"),
    ("rope_theta", float("nan"), FormatError, "finite number"),
    ("rope_theta", 0.5, FormatError, "finite number"),
    ("rope_theta", "10000", FormatError, "finite number"),
    ("rope_scaling", "linear", FormatError, "an object"),
    ("rope_scaling", {"type": "yarn", "factor": 2.0}, UnsupportedError, "yarn"),
    ("rope_scaling", {"type": 5}, FormatError, "string"),
    ("rope_scaling", {"rope_type": "linear", "factor": 1e39}, FormatError, "factor"),
    ("rope_scaling", {"rope_type": "linear", "factor": -2}, FormatError, "factor"),
    ("rope_parameters", [1, 2], FormatError, "an object"),
    ("rms_norm_eps", -1, FormatError, "finite number"),
    ("rms_norm_eps", "tiny", FormatError, "finite number"),
    ("vocab_size", 7, FormatError, "differs"),
    ("vocab_size", "420", FormatError, "integer"),
    ("tie_word_embeddings", "yes", FormatError, "true or false"),
    ("architectures", "BitNetForCausalLM", FormatError, "list"),
    ("architectures", [5], FormatError, "list"),
    ("architectures", ["GPT2LMHeadModel"], UnsupportedError, "GPT2LMHeadModel"),
    ("quantization_config", "bitnet", FormatError, "an object"),
    ("quantization_config", {"linear_class": 5}, FormatError, "string"),
    ("quantization_config", {"use_rms_norm": True}, UnsupportedError, "use_rms_norm"),
    ("hidden_act", 5, FormatError, "string"),
    ("hidden_act", "gelu", UnsupportedError, "gelu"),
    ("weight_quant", ["binary"], FormatError, "string"),
]


@pytest.mark.parametrize(("key", "value", "cls", "words"), CONFIG_CASES)
def test_config_field(ckpt, tmp_path, key, value, cls, words):
    edit_config(ckpt, **{key: value})
    message = convert_fails(ckpt, tmp_path, cls, words)
    where = "config.json" in message or "model.safetensors" in message or str(ckpt) in message
    assert where, message
    if cls is FormatError and words not in ("shape",):
        assert key.split(".")[0] in message or "num_attention_heads" in message, message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2, 3]", "expected a JSON object"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[" * 100000 + b"]" * 100000, "nests too deeply"),
    ],
)
def test_config_file(ckpt, tmp_path, content, words):
    (ckpt / "config.json").write_bytes(content)
    convert_fails(ckpt, tmp_path, FormatError, "config.json", words)


def test_config_is_a_directory(ckpt, tmp_path):
    (ckpt / "config.json").unlink()
    (ckpt / "config.json").mkdir()
    convert_fails(ckpt, tmp_path, FormatError, "config.json")


# -- safetensors files ---------------------------------------------------------------------------


def write_safetensors(path: Path, header: dict[str, Any] | bytes, data: bytes = b"") -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def good_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"[1]", "not a JSON object"),
        (b"{bad", "not valid JSON"),
        (b"[" * 100000 + b"]" * 100000, "nests too deeply"),
        ({"w": "F32"}, "expected an object"),
        ({"w": good_entry(dtype="F8")}, "dtype must be one of"),
        ({"w": good_entry(dtype=["F32"])}, "dtype must be one of"),
        ({"w": good_entry(shape=[-2, 2])}, "shape must be"),
        ({"w": good_entry(shape=[2.0, 2])}, "shape must be"),
        ({"w": good_entry(shape="2x2")}, "shape must be"),
        ({"w": good_entry(shape=[1] * 9)}, "shape must be"),
        ({"w": good_entry(shape=[1 << 62, 1 << 62])}, "shape must be"),
        ({"w": good_entry(data_offsets=[0])}, "data_offsets"),
        ({"w": good_entry(data_offsets=[0.0, 16.0])}, "data_offsets"),
        ({"w": good_entry(data_offsets=[False, 16])}, "data_offsets"),
        ({"w": good_entry(data_offsets=[-16, 0])}, "should take 16 bytes"),
        ({"w": good_entry(data_offsets=[0, 12])}, "should take 16 bytes"),
        ({"w": good_entry(data_offsets=[16, 32])}, "truncated"),
    ],
)
def test_malformed_safetensors_header(ckpt, tmp_path, header, words):
    write_safetensors(ckpt / "model.safetensors", header, bytes(16))
    message = convert_fails(ckpt, tmp_path, FormatError, "model.safetensors", words)
    if isinstance(header, dict):
        assert "'w'" in message


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x01\x02", struct.pack("<Q", 1 << 60) + b"{}", struct.pack("<Q", 100) + b"{}"],
)
def test_truncated_safetensors(ckpt, tmp_path, raw):
    (ckpt / "model.safetensors").write_bytes(raw)
    convert_fails(ckpt, tmp_path, FormatError, "model.safetensors")


def test_tensor_of_the_wrong_dtype(ckpt, tmp_path):
    from safetensors.numpy import save_file

    from bitnet.convert.safetensors_io import Checkpoint

    ck = Checkpoint(ckpt)
    tensors = {n: np.array(ck[n].float32()) for n in ck.names()}
    name = "model.layers.0.input_layernorm.weight"
    tensors[name] = tensors[name].astype(np.int32)
    save_file(tensors, str(ckpt / "model.safetensors"))
    convert_fails(ckpt, tmp_path, FormatError, name, "I32", "float")
    tensors[name] = np.ones(256, dtype=np.float32)
    q = "model.layers.1.self_attn.q_proj.weight"
    tensors[q] = np.zeros((256, 256), dtype=np.int64)
    save_file(tensors, str(ckpt / "model.safetensors"))
    convert_fails(ckpt, tmp_path, FormatError, q, "I64")


def test_reader_matches_safetensors_on_every_dtype(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    from bitnet.convert.safetensors_io import Checkpoint

    gen = torch.Generator().manual_seed(0)
    values = (torch.randn(3, 5, generator=gen) * 100).abs()
    tensors = {
        str(dtype).removeprefix("torch."): values.to(dtype)
        for dtype in (
            torch.uint16,
            torch.uint32,
            torch.uint64,
            torch.float64,
            torch.float32,
            torch.float16,
            torch.bfloat16,
            torch.int64,
            torch.int32,
            torch.int16,
            torch.int8,
            torch.uint8,
            torch.bool,
        )
    }
    tensors["scalar"] = torch.tensor(1.5)
    tensors["empty"] = torch.zeros(0, 4)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    ours = Checkpoint(tmp_path)
    theirs = load_file(str(tmp_path / "model.safetensors"))
    assert set(ours.names()) == set(theirs)
    for name, t in theirs.items():
        ref = ours[name]
        assert ref.shape == tuple(t.shape), name
        if t.dtype == torch.bfloat16:
            np.testing.assert_array_equal(ref.float32(), t.float().numpy())
        else:
            np.testing.assert_array_equal(np.asarray(ref.raw()), t.numpy(), err_msg=name)
        if t.is_floating_point() and t.dim() > 0:
            np.testing.assert_array_equal(ref.float32(rows=slice(1, 2)), t.float()[1:2].numpy())


# -- sharded checkpoints: the index ---------------------------------------------------------------


def shard(ckpt: Path, weight_map: dict[str, str] | None = None) -> dict[str, str]:
    """Splits model.safetensors into two shards with an index (weight_map overrides it)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(ckpt / "model.safetensors"))  # keeps BF16 as it is
    names = sorted(tensors)
    half = len(names) // 2
    parts = {"model-00001-of-00002.safetensors": names[:half]}
    parts["model-00002-of-00002.safetensors"] = names[half:]
    (ckpt / "model.safetensors").unlink()
    mapping: dict[str, str] = {}
    for file, part in parts.items():
        save_file({n: tensors[n] for n in part}, str(ckpt / file))
        mapping.update(dict.fromkeys(part, file))
    index = {"metadata": {}, "weight_map": weight_map if weight_map is not None else mapping}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    return mapping


def test_sharded_checkpoint_converts_like_one_file(ckpt, tmp_path, converted):
    shard(ckpt)
    out = bitnet.convert(ckpt, tmp_path / "sharded.gguf", embedding_type="f32", progress=False)
    assert _same_tensors(out, converted("2b4t-bf16"))


def _same_tensors(a: Path, b: Path) -> bool:
    import gguf

    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    return all(
        np.array_equal(np.asarray(x.data), np.asarray(y.data))
        for x, y in zip(ra.tensors, rb.tensors, strict=True)
    )


@pytest.mark.parametrize(
    "bad_shard",
    ["../other/model.safetensors", "/etc/passwd", "sub/model.safetensors", "..", "x.bin"],
)
def test_index_cannot_leave_the_checkpoint(ckpt, tmp_path, bad_shard):
    mapping = shard(ckpt)
    (tmp_path / "other").mkdir()
    first = next(iter(mapping))
    shutil.copy(ckpt / mapping[first], tmp_path / "other" / "model.safetensors")
    mapping[first] = bad_shard
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": mapping}))
    convert_fails(ckpt, tmp_path, FormatError, "model.safetensors.index.json", bad_shard)


@pytest.mark.parametrize(
    ("index", "words"),
    [
        ("{bad json", "not valid JSON"),
        ('{"weight_map": [1]}', "weight_map"),
        ('{"no_map": {}}', "weight_map"),
        ('{"weight_map": {"model.norm.weight": 5}}', "shard file name"),
        ('{"weight_map": {"model.norm.weight": ""}}', "shard file name"),
    ],
)
def test_malformed_index(ckpt, tmp_path, index, words):
    shard(ckpt)
    (ckpt / "model.safetensors.index.json").write_text(index)
    convert_fails(ckpt, tmp_path, FormatError, "model.safetensors.index.json", words)


def test_index_and_shards_disagree(ckpt, tmp_path):
    mapping = shard(ckpt)
    files = sorted(set(mapping.values()))
    name = next(n for n, f in mapping.items() if f == files[0])
    wrong = {**mapping, name: files[1]}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wrong}))
    convert_fails(ckpt, tmp_path, FormatError, name, files[0], files[1])
    extra = {**mapping, "model.extra.weight": files[0]}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": extra}))
    convert_fails(ckpt, tmp_path, FormatError, "model.extra.weight", "lacks it")
    missing = {**mapping, name: "model-00003-of-00003.safetensors"}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": missing}))
    convert_fails(ckpt, tmp_path, FormatError, "model-00003-of-00003.safetensors")


BAD_VOCAB = b'{"model": {"type": "BPE", "vocab": 5}, "decoder": {"type": "ByteLevel"}}'
BAD_MERGES = (
    b'{"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": 3}, '
    b'"decoder": {"type": "ByteLevel"}, "added_tokens": 7}'
)


# -- tokenizer files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "content", "words"),
    [
        ("tokenizer.json", b"[1, 2]", "expected a JSON object"),
        ("tokenizer.json", b"{oops", "not valid JSON"),
        ("tokenizer.json", BAD_VOCAB, "not a valid tokenizer file"),
        ("tokenizer.json", BAD_MERGES, "not a valid tokenizer file"),
        ("tokenizer.json", b"[" * 100000 + b"]" * 100000, "nests too deeply"),
        ("tokenizer_config.json", b'{"chat_template": [{"name": 1}]}', "chat_template"),
    ],
)
def test_malformed_tokenizer_files(ckpt, tmp_path, file, content, words):
    (ckpt / file).write_bytes(content)
    message = convert_fails(ckpt, tmp_path, FormatError, words)
    assert str(ckpt) in message


@pytest.mark.parametrize("content", [b"", b"garbage, not a protobuf", bytes(range(256)) * 8])
def test_garbage_sentencepiece_model(hf_models, tmp_path, content):
    src = tmp_path / "spm"
    shutil.copytree(hf_models["1bitllm"].path, src)
    (src / "tokenizer.model").write_bytes(content)
    convert_fails(src, tmp_path, FormatError, "tokenizer.model", "not a valid tokenizer file")


def test_broken_generation_config_is_ignored(ckpt, tmp_path, converted):
    (ckpt / "generation_config.json").write_bytes(b"[" * 100000)
    out = bitnet.convert(ckpt, tmp_path / "out.gguf", embedding_type="f32", progress=False)
    assert out.is_file()


def test_no_tokenizer_at_all(ckpt, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (ckpt / name).unlink()
    convert_fails(ckpt, tmp_path, FormatError, "no tokenizer.json or tokenizer.model")


# -- options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"), [("weight_type", "q4_0"), ("embedding_type", "f8"), ("weight_type", 5)]
)
def test_bad_options(ckpt, tmp_path, option, value):
    with pytest.raises(ParameterError) as e:
        bitnet.convert(ckpt, tmp_path / "o.gguf", progress=False, **{option: value})
    assert e.value.param == option and option in str(e.value)


def test_weight_scale_beyond_fp16(hf_models, tmp_path):
    """The llama layout stores beta in fp16 block scales: one beyond 65504 is refused by
    name instead of written as infinity."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    src = tmp_path / "llama"
    shutil.copytree(hf_models["llama-bitlinear"].path, src)
    tensors = load_file(str(src / "model.safetensors"))
    name = "model.layers.0.mlp.up_proj.weight_scale"
    tensors[name] = torch.full_like(tensors[name], 1e-6)  # divides: beta = 1e6
    save_file(tensors, str(src / "model.safetensors"))
    convert_fails(src, tmp_path, UnsupportedError, "model.layers.0.mlp.up_proj", "fp16")
