"""Corrupt, truncated or wrong model files and checkpoints raise clear errors, never crash.

Each reader obligation of docs/format.md ("Reader obligations") has a test here.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

import bitnet
from bitnet import BitnetError, FormatError, UnsupportedError, _core
from gguf_builders import write_gguf_copy

pytest.importorskip("torch")
RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def good(converted) -> bytes:
    return Path(converted("2b4t-packed", "tq2_0", "f16")).read_bytes()


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def load_or_error(path: Path) -> BaseException | None:
    """Loads a model; returns the bitnet error raised, or None if it loaded."""
    try:
        bitnet.load(path)
    except BitnetError as e:
        assert str(e), "errors must have a message"
        return e
    return None


def header_end(data: bytes, path: Path) -> int:
    return int(_core.GgufFile(str(path)).data_offset)


def test_good_file_loads(good, tmp_path):
    assert load_or_error(write(tmp_path, good)) is None


def test_truncation_anywhere_raises_format_error(good, tmp_path):
    data_offset = header_end(good, write(tmp_path, good))
    cuts = list(range(0, min(data_offset, 4096), 5)) + list(range(4096, data_offset, 997))
    cuts += [*sorted(RNG.integers(data_offset, len(good), 40).tolist()), len(good) - 1]
    for cut in cuts:
        err = load_or_error(write(tmp_path, good[:cut]))
        assert isinstance(err, FormatError), f"cut at {cut}: {err!r}"
        assert isinstance(err, ValueError)


def test_bit_flips_in_header_never_crash(good, tmp_path):
    data_offset = header_end(good, write(tmp_path, good))
    for _ in range(400):
        data = bytearray(good)
        pos = int(RNG.integers(0, data_offset))
        data[pos] ^= 1 << int(RNG.integers(0, 8))
        load_or_error(write(tmp_path, bytes(data)))  # raises BitnetError or loads; never crashes


def test_random_bytes_in_weights_never_crash(good, tmp_path):
    data_offset = header_end(good, write(tmp_path, good))
    for _ in range(30):
        data = bytearray(good)
        for pos in RNG.integers(data_offset, len(good), 64):
            data[int(pos)] = int(RNG.integers(0, 256))
        path = write(tmp_path, bytes(data))
        if load_or_error(path) is None:  # garbage weights may still be a valid model
            bitnet.load(path).logits([1, 2, 3])


@pytest.mark.parametrize(
    ("offset", "value", "fmt", "message"),
    [
        (0, 0x12345678, "<I", "not a GGUF file"),
        (4, 1, "<I", "unsupported GGUF version 1"),
        (4, 99, "<I", "unsupported GGUF version 99"),
        (8, 2**63 - 1, "<Q", "tensor count"),
        (16, 2**40, "<Q", "metadata count"),
    ],
)
def test_header_fields(good, tmp_path, offset, value, fmt, message):
    data = bytearray(good)
    struct.pack_into(fmt, data, offset, value)
    err = load_or_error(write(tmp_path, bytes(data)))
    assert isinstance(err, FormatError) and message in str(err)


def tensor_info_offset(data: bytes, name: str) -> int:
    """Byte offset just past the name of tensor `name` in the tensor table."""
    needle = struct.pack("<Q", len(name)) + name.encode()
    return data.rindex(needle) + len(needle)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_dims", 9, "dimensions"),
        ("dim0", 0, "size 0"),
        ("dim0", 2**40 + 1, "row length"),
        ("dim0", 2**40, "needs bytes"),
        ("type", 97, "unknown tensor type id 97"),
        ("offset", 2**62, "needs bytes"),
        ("offset", 3, "not a multiple of the alignment"),
    ],
)
def test_tensor_table_fields(good, tmp_path, field, value, message):
    name = "blk.1.ffn_up.weight"
    data = bytearray(good)
    at = tensor_info_offset(good, name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    where = {
        "n_dims": (at, "<I"),
        "dim0": (at + 4, "<Q"),
        "type": (at + 4 + 8 * n_dims, "<I"),
        "offset": (at + 8 + 8 * n_dims, "<Q"),
    }
    pos, fmt = where[field]
    struct.pack_into(fmt, data, pos, value)
    err = load_or_error(write(tmp_path, bytes(data)))
    assert isinstance(err, FormatError), repr(err)
    assert message in str(err)
    if field != "n_dims":
        assert name in str(err)


def test_overlapping_tensors(good, tmp_path):
    data = bytearray(good)
    a = tensor_info_offset(good, "blk.1.ffn_up.weight")
    b = tensor_info_offset(good, "blk.1.ffn_gate.weight")
    off_a = a + 8 + 8 * 2
    off_b = b + 8 + 8 * 2
    struct.pack_into("<Q", data, off_a, struct.unpack_from("<Q", data, off_b)[0])
    err = load_or_error(write(tmp_path, bytes(data)))
    assert isinstance(err, FormatError) and "overlap" in str(err)


def test_not_a_gguf_file(tmp_path):
    assert isinstance(load_or_error(write(tmp_path, b"")), FormatError)
    assert isinstance(load_or_error(write(tmp_path, RNG.bytes(5000))), FormatError)
    assert isinstance(load_or_error(write(tmp_path, b"GGUF")), FormatError)
    with pytest.raises(FormatError, match="not a regular file"):
        _core.GgufFile(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        bitnet.load(tmp_path / "missing.gguf")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("bitnet.embedding_length", "missing key 'bitnet.embedding_length'"),
        ("bitnet.attention.layer_norm_rms_epsilon", "layer_norm_rms_epsilon"),
    ],
)
def test_missing_keys(converted, tmp_path, key, message):
    path = write_gguf_copy(tmp_path / "m.gguf", converted("2b4t-packed"), drop_keys=(key,))
    err = load_or_error(path)
    assert isinstance(err, FormatError) and message in str(err)


def test_missing_architecture_key(good, tmp_path):
    data = bytearray(good)
    i = data.index(b"general.architecture")
    data[i : i + 20] = b"general.architecturX"
    err = load_or_error(write(tmp_path, bytes(data)))
    assert isinstance(err, FormatError) and "missing key 'general.architecture'" in str(err)


@pytest.mark.parametrize(
    "name", ["blk.1.ffn_up.weight", "output_norm.weight", "blk.0.attn_sub_norm.weight"]
)
def test_missing_tensors(converted, tmp_path, name):
    path = write_gguf_copy(tmp_path / "m.gguf", converted("2b4t-packed"), drop_tensors=(name,))
    err = load_or_error(path)
    if name.endswith("sub_norm.weight"):
        assert err is None  # sub-norms are optional; the model is a plain llama block then
    else:
        assert isinstance(err, FormatError) and f"missing tensor '{name}'" in str(err)


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("blk.0.attn_norm.weight", gguf.GGMLQuantizationType.TQ2_0),
        ("blk.0.attn_q.weight", gguf.GGMLQuantizationType.Q8_0),
        ("token_embd.weight", gguf.GGMLQuantizationType.TQ2_0),
    ],
)
def test_wrong_type_for_role(converted, tmp_path, name, qtype):
    path = write_gguf_copy(tmp_path / "m.gguf", converted("2b4t-packed"), retype={name: qtype})
    err = load_or_error(path)
    assert isinstance(err, FormatError) and name in str(err) and qtype.name in str(err)


def test_non_ternary_float_weights_in_llama_file(converted, tmp_path):
    src = converted("llama-bitlinear")
    path = write_gguf_copy(
        tmp_path / "m.gguf", src, retype={"blk.0.attn_q.weight": gguf.GGMLQuantizationType.F16}
    )
    assert load_or_error(path) is None  # ternary values in F16 are exact and accepted
    data = bytearray(path.read_bytes())
    at = tensor_info_offset(bytes(data), "blk.0.attn_q.weight")
    f = _core.GgufFile(str(path))
    t = next(t for t in f.tensors() if t["name"] == "blk.0.attn_q.weight")
    data[t["offset"] : t["offset"] + 2] = np.float16(0.123).tobytes()  # no longer ternary-valued
    assert at > 0
    err = load_or_error(write(tmp_path, bytes(data), "m2.gguf"))
    assert isinstance(err, UnsupportedError) and "ternary" in str(err)


def test_unsupported_architecture(converted, tmp_path):
    data = bytearray(Path(converted("2b4t-packed")).read_bytes())
    i = data.index(b"bitnet")  # the value of general.architecture
    data[i : i + 6] = b"gpt-nx"
    err = load_or_error(write(tmp_path, bytes(data)))
    assert isinstance(err, UnsupportedError) and "gpt-nx" in str(err)


# -- converter inputs --------------------------------------------------------------------------


def copy_checkpoint(hf_models, name, tmp_path) -> Path:
    dst = tmp_path / name
    shutil.copytree(hf_models[name].path, dst)
    return dst


def test_convert_truncated_safetensors(hf_models, tmp_path):
    src = copy_checkpoint(hf_models, "2b4t-bf16", tmp_path)
    st = src / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(FormatError, match="truncated"):
        bitnet.convert(src, tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists()
    assert not (tmp_path / "out.gguf.part").exists()


def test_convert_missing_tensor(hf_models, tmp_path):
    from safetensors.numpy import save_file

    src = copy_checkpoint(hf_models, "1bitllm", tmp_path)
    from bitnet.convert.safetensors_io import Checkpoint

    ck = Checkpoint(src)
    tensors = {n: np.asarray(ck[n].raw()) for n in ck.names() if "layers.1.mlp.up_proj" not in n}
    save_file(tensors, str(src / "model.safetensors"))
    with pytest.raises(
        FormatError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"
    ):
        bitnet.convert(src, tmp_path / "out.gguf", progress=False)


def test_convert_wrong_shape_and_bad_config(hf_models, tmp_path):
    src = copy_checkpoint(hf_models, "1bitllm", tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["intermediate_size"] = 400
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match=r"has shape .* expected"):
        bitnet.convert(src, tmp_path / "out.gguf", progress=False)
    del cfg["hidden_size"]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="missing key 'hidden_size'"):
        bitnet.convert(src, tmp_path / "out.gguf", progress=False)


def test_convert_unsupported_checkpoints(hf_models, tmp_path):
    src = copy_checkpoint(hf_models, "llama-bitlinear", tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    del cfg["quantization_config"]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedError, match="full-precision"):
        bitnet.convert(src, tmp_path / "out.gguf", progress=False)
    cfg["architectures"] = ["MistralForCausalLM"]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedError, match="MistralForCausalLM"):
        bitnet.convert(src, tmp_path / "out.gguf", progress=False)
    with pytest.raises(FormatError, match=r"no config\.json"):
        bitnet.convert(tmp_path, tmp_path / "out.gguf", progress=False)


def test_convert_refuses_to_overwrite(hf_models, converted, tmp_path):
    dst = tmp_path / "x.gguf"
    dst.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        bitnet.convert(hf_models["2b4t-bf16"].path, dst, progress=False)
    assert dst.read_bytes() == b"keep me"


def test_convert_f16_overflow_is_reported(hf_models, tmp_path):
    from safetensors.numpy import save_file

    from bitnet.convert.safetensors_io import Checkpoint

    src = copy_checkpoint(hf_models, "1bitllm", tmp_path)
    ck = Checkpoint(src)
    tensors = {n: np.array(ck[n].raw()) for n in ck.names()}
    tensors["model.embed_tokens.weight"][3, 5] = 1e6
    save_file(tensors, str(src / "model.safetensors"))
    with pytest.raises(UnsupportedError, match="beyond the F16 range"):
        bitnet.convert(src, tmp_path / "out.gguf", progress=False)
    bitnet.convert(src, tmp_path / "out.gguf", embedding_type="f32", progress=False)
