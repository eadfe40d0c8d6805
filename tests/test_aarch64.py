"""The aarch64 cross build under qemu-user: kernel twins and end-to-end logits on two CPU models.

Builds nothing: it runs the binaries of a cross build (``.ci/run`` makes one; docs/kernels.md,
"ARM", says how) found in ``$BITNET_AARCH64_BUILD`` (default ``<repo>/build-aarch64``) with
``qemu-aarch64-static -L /usr/aarch64-linux-gnu`` on ``-cpu max`` (dotprod and i8mm), ``-cpu
cortex-a76`` (dotprod, no i8mm) and ``-cpu cortex-a53`` (armv8.0: NEON only). Without the binaries or qemu the tests skip, unless
``BITNET_REQUIRE_AARCH64=1`` (set by CI), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import bitnet

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("BITNET_AARCH64_BUILD") or ROOT / "build-aarch64")
REQUIRED = os.environ.get("BITNET_REQUIRE_AARCH64") == "1"
SYSROOT = Path("/usr/aarch64-linux-gnu")
TEST_KERNELS = BUILD / "tests" / "cpp" / "test_kernels"
TEST_DECODER = BUILD / "tests" / "cpp" / "test_decoder"
BITNET_RUN = BUILD / "bitnet_run"

# qemu CPU model -> the kernel tables it must get (cortex-a76 lacks SMMLA: no i8mm table;
# cortex-a53 lacks SDOT too: no dotprod table).
CPUS = {
    "max": ("ref", "neon", "dotprod", "i8mm"),
    "cortex-a76": ("ref", "neon", "dotprod"),
    "cortex-a53": ("ref", "neon"),
}

# (layout, weight type): TQ2_0 with per-tensor scales, the 1bitLLM layout (SentencePiece, an
# I2_S fallback tensor), and the llama architecture from TQ1_0.
MODELS = [("2b4t-packed", "tq2_0"), ("1bitllm", "tq2_0"), ("llama-bitlinear", "tq1_0")]
TEXT = "Ternary weights take the values -1, 0 and +1; activations are quantized to 8 bits."


def _unavailable() -> str | None:
    """Why the aarch64 binaries cannot run here, or None when they can."""
    if shutil.which("qemu-aarch64-static") is None:
        return "qemu-aarch64-static not found (apt-get install qemu-user-static)"
    if not (SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        return f"no aarch64 sysroot at {SYSROOT} (apt-get install g++-aarch64-linux-gnu)"
    for binary in (TEST_KERNELS, TEST_DECODER, BITNET_RUN):
        if not binary.is_file():
            return f"{binary} not built (cross build: docs/kernels.md, section ARM)"
    return None


UNAVAILABLE = _unavailable()
# Skipped at collection (before the session fixtures build any model) unless CI requires them.
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None and not REQUIRED, reason=UNAVAILABLE or "")


@pytest.fixture(scope="module", autouse=True)
def _aarch64_available() -> None:
    if UNAVAILABLE is not None:
        pytest.fail(f"BITNET_REQUIRE_AARCH64=1 but {UNAVAILABLE}")


def _qemu(
    cpu: str, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    # The guest inherits the environment: keep the caller's kernel overrides out of it.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BITNET_")}
    clean.update(env or {})
    cmd = ["qemu-aarch64-static", "-L", str(SYSROOT), "-cpu", cpu, *map(str, args)]
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, env=clean, timeout=timeout
    )


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_kernel_twins_under_qemu(cpu: str) -> None:
    expected = CPUS[cpu]
    out = _qemu(cpu, TEST_KERNELS, env={"BITNET_EXPECT_ISA": expected[-1]})
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert tuple(re.findall(r"^testing (\w+)$", out.stdout, re.MULTILINE)) == expected, log[-4000:]
    assert f"active kernels: {expected[-1]}" in out.stdout
    summary = re.search(r"(\d+) tables; (\d+) passed, (\d+) failed", out.stdout)
    assert summary is not None, log[-4000:]
    n_tables, n_passed, n_failed = (int(g) for g in summary.groups())
    assert (n_tables, n_failed) == (len(expected), 0)
    assert n_passed > 10000 * len(expected)


def test_batched_decoder_under_qemu() -> None:
    # The threaded batched decoder end to end on the bundled models, every KV type, with the NEON
    # attention kernels (cortex-a53: the neon table; dotprod shares its attention kernels).
    out = _qemu("cortex-a53", TEST_DECODER, ROOT / "models")
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "isa neon" in out.stdout, log[-4000:]
    assert re.search(r"^(\d+) passed, 0 failed$", out.stdout, re.MULTILINE), log[-4000:]


def _run_logits(
    cpu: str,
    model: Path,
    ids: list[int],
    tmp: Path,
    n_batch: int = 256,
    *options: str,
    isa: str | None = None,
    env: dict[str, str] | None = None,
) -> np.ndarray:
    """Logits (flat float32) of bitnet_run under qemu; checks it ran the kernels `isa` (default:
    the best this CPU model has)."""
    out_file = tmp / f"logits-{cpu}-{n_batch}.f32"
    args = ("--n-batch", str(n_batch), *options, model, out_file, *map(str, ids))
    out = _qemu(cpu, BITNET_RUN, *args, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"isa={isa or CPUS[cpu][-1]} " in out.stdout, out.stdout
    return np.fromfile(out_file, dtype="<f4")


@pytest.mark.parametrize("cpu", sorted(CPUS))
@pytest.mark.parametrize(("layout", "weight_type"), MODELS)
def test_bitnet_run_matches_x86_engine(
    converted: Callable[..., Path], tmp_path: Path, layout: str, weight_type: str, cpu: str
) -> None:
    import hf_fixtures as hfx

    path = converted(layout, weight_type)
    model = bitnet.load(path)
    ids = model.tokenize(TEXT)
    want = model.logits(ids)
    # Both ternary families (BITNET_KERNEL: MAD, or LUT with build_lut), each in one pass over
    # all tokens (multi-token kernels, on several threads, once with the q8_0 KV cache) and token
    # by token (single-token GEMV kernels, the KV cache filling up one position at a time, once
    # in f32).
    runs = [
        ("mad", 256, ("--threads", "3")),
        ("mad", 1, ("--kv-type", "f32")),
        ("lut", 256, ("--threads", "2", "--kv-type", "q8_0")),
        ("lut", 1, ("--kv-f16",)),
    ]
    for kernel, n_batch, options in runs:
        env = {"BITNET_KERNEL": kernel}
        got = _run_logits(cpu, path, ids, tmp_path, n_batch, *options, env=env)
        assert got.size == want.size, (kernel, n_batch, got.size, want.shape)
        hfx.assert_logits_close(got.reshape(want.shape), want)


def test_bitnet_run_reports_errors(tmp_path: Path) -> None:
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")
    out = _qemu("cortex-a53", BITNET_RUN, bad, tmp_path / "out.f32", "1", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.startswith("bitnet_run: "), out.stderr
    usage = _qemu("cortex-a53", BITNET_RUN, bad)
    assert usage.returncode == 2


@pytest.mark.parametrize(
    ("cpu", "forced", "isa"),
    [
        ("max", "neon", "neon"),
        ("max", "dotprod", "dotprod"),
        ("max", "ref", "ref"),
        ("cortex-a53", "dotprod", "neon"),
        ("cortex-a76", "i8mm", "dotprod"),
    ],
)
def test_forced_isa_under_qemu(
    converted: Callable[..., Path], tmp_path: Path, cpu: str, forced: str, isa: str
) -> None:
    # BITNET_ISA only ever lowers the level: dotprod on a CPU without SDOT runs neon.
    import hf_fixtures as hfx

    path = converted("2b4t-packed", "tq2_0")
    model = bitnet.load(path)
    ids = model.tokenize(TEXT)
    want = model.logits(ids)
    got = _run_logits(cpu, path, ids, tmp_path, isa=isa, env={"BITNET_ISA": forced})
    hfx.assert_logits_close(got.reshape(want.shape), want)
