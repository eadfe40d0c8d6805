"""The bitnet command line, run as a user would (subprocess)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bitnet.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_convert_info_generate(hf_models, tmp_path):
    out = tmp_path / "m.gguf"
    r = run("convert", str(hf_models["2b4t-packed"].path), str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert out.exists()

    r = run("info", str(out))
    assert r.returncode == 0, r.stderr
    assert "general.architecture" in r.stdout and "'bitnet'" in r.stdout
    assert "blk.1.ffn_down.weight" in r.stdout and "TQ2_0" in r.stdout

    r = run("generate", "-m", str(out), "-n", "5", "In the beginning")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() != ""

    r = run("convert", str(hf_models["2b4t-packed"].path), str(out), "-q")
    assert r.returncode == 1
    assert "exists" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("info", "/nonexistent.gguf"),
        ("generate", "-m", "/nonexistent.gguf", "hi"),
        ("convert", "/nonexistent", "/tmp/x.gguf"),
    ],
)
def test_errors_are_one_line(args):
    r = run(*args)
    assert r.returncode == 1
    assert r.stderr.startswith("bitnet: error: ")
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_corrupt_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    r = run("info", str(bad))
    assert r.returncode == 1 and "bitnet: error:" in r.stderr and "Traceback" not in r.stderr
