"""Hostile model files: small inputs that declare huge counts, invalid UTF-8, FIFOs, and files
rewritten under a loaded model. Each fails with a BitnetError naming the file and the key, in
bounded memory, without blocking or crashing (issue 11; tests/fuzz/regressions holds the
inputs, which the fuzzer's CI step also runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bitnet
from bitnet import BitnetError, FormatError
from bitnet.errors import ParameterError

ROOT = Path(__file__).parents[1]
REGRESSIONS = sorted((ROOT / "tests" / "fuzz" / "regressions").glob("*.gguf"))
MODEL = ROOT / "models" / "bitnet-kjv-5m-tq2_0.gguf"

# file -> (exception class, what the message must name)
EXPECTED = {
    "block-count-4m.gguf": (FormatError, "'llama.block_count' is 4000000"),
    "context-length-2e31.gguf": (ParameterError, "llama.context_length"),
    "huge-array-count.gguf": (FormatError, "key 'tokenizer.ggml.merges'"),
    "invalid-utf8-key.gguf": (FormatError, "not valid UTF-8: byte 0xff at byte offset"),
    "invalid-utf8-value.gguf": (FormatError, "key 'general.name' is not valid UTF-8"),
}


def test_every_regression_file_has_an_expectation():
    assert {p.name for p in REGRESSIONS} == set(EXPECTED)


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
def test_regression_files_fail_with_named_errors(path):
    cls, text = EXPECTED[path.name]
    with pytest.raises(cls) as info:
        bitnet.load(path)
    assert str(path) in str(info.value) and text in str(info.value), str(info.value)


_PEAK_SCRIPT = """
import json, resource, sys
import bitnet
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for path in sys.argv[1:]:
    try:
        bitnet.load(path)
        out[path] = "loaded"
    except bitnet.BitnetError as e:
        out[path] = type(e).__name__
out["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps(out))
"""


def test_hostile_counts_take_bounded_memory(tmp_path):
    """Peak memory for any input stays under 2x its size + 256 MB (issue 11's bound)."""
    from gguf_edit import T, edit_gguf

    # The issue's example: the bundled model claiming four million blocks.
    blocks = edit_gguf(
        MODEL, tmp_path / "blocks.gguf", set_keys={"bitnet.block_count": (4_000_000, T.UINT32)}
    )
    paths = [str(p) for p in [*REGRESSIONS, blocks]]
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, *paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = json.loads(result.stdout)
    assert all(out[p] != "loaded" for p in paths), out
    largest = max(Path(p).stat().st_size for p in paths)
    assert out["peak_kib"] * 1024 <= 2 * largest + (256 << 20), out


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    script = (
        "import sys, bitnet\n"
        "try:\n    bitnet.load(sys.argv[1])\n"
        "except bitnet.FormatError as e:\n    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(fifo)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "not a regular file (a FIFO)" in result.stdout, result.stdout + result.stderr
    # The C++ reader checks the type before opening too.
    with pytest.raises(FormatError, match="a FIFO"):
        bitnet._core.GgufFile(str(fifo))


def test_file_rewritten_under_a_loaded_model(tmp_path):
    """Metadata is read from a private copy of the header: rewriting the file in place (lengths
    and strings trashed) cannot crash metadata.get or generation."""
    path = tmp_path / "m.gguf"
    shutil.copyfile(MODEL, path)
    model = bitnet.load(path, n_ctx=64)
    header = int(model.metadata.data_offset)
    before = (
        model.metadata.get("general.name"),
        list(model.metadata.get("tokenizer.ggml.tokens")),
        model.generate("In the beginning", max_tokens=8, temperature=0),
    )
    with path.open("r+b") as f:  # every byte of the header, lengths included, becomes 0xFF
        f.write(b"\xff" * header)
    after = (
        model.metadata.get("general.name"),
        list(model.metadata.get("tokenizer.ggml.tokens")),
        model.generate("In the beginning", max_tokens=8, temperature=0),
    )
    assert after == before
    assert model.metadata.keys() == bitnet.load(MODEL, n_ctx=16).metadata.keys()


def test_invalid_utf8_names_key_and_offset(tmp_path):
    data = bytearray(MODEL.read_bytes())
    at = data.index(b"hf-default")  # general.name's value
    data[at + 2] = 0xC3  # a lead byte followed by an ASCII byte
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError) as info:
        bitnet.load(path)
    message = str(info.value)
    assert "key 'general.name'" in message and f"byte offset {at + 2}" in message
    assert not isinstance(info.value, UnicodeError)


def test_messages_with_undecodable_paths_stay_bitnet_errors(tmp_path):
    path = os.fsencode(tmp_path) + b"/caf\xe9.gguf"
    with open(path, "wb") as f:
        f.write(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(BitnetError) as info:
        bitnet._core.GgufFile(path)
    assert "truncated" in str(info.value) and "caf\\xe9" in str(info.value)
    with pytest.raises(FormatError, match="truncated"):
        bitnet.load(os.fsdecode(path))
