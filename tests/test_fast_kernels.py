"""The fast decoder (SIMD kernels, LUT and MAD families, threads, int8 output, fp16 KV cache)
against the scalar reference decoder on every checkpoint layout."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import bitnet
from conftest import LAYOUTS

hfx = pytest.importorskip("hf_fixtures")

PROMPT = "In the beginning God created the heaven and the earth. And the earth was without form"
BEST = bitnet.cpu_info()["isa"]


def _logits(path, ids, **options):
    model = bitnet.load(path, **options)
    try:
        return model.logits(ids)
    finally:
        model.close()


@pytest.fixture(scope="module")
def reference(converted):
    """(path, ids, logits) of the scalar decoder: ref kernels, MAD, exact f32 output, 1 thread."""
    cache = {}

    def get(layout, weight_type="tq2_0"):
        key = (layout, weight_type)
        if key not in cache:
            path = converted(layout, weight_type, "f32")
            ids = bitnet.load(path).tokenize(PROMPT)
            ref = _logits(path, ids, isa="ref", kernel="mad", output_type="f32", n_threads=1)
            cache[key] = (path, ids, ref)
        return cache[key]

    return get


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "options",
    [
        {"kernel": "mad", "output_type": "f32", "n_threads": 2},
        {"kernel": "lut", "output_type": "f32", "n_threads": 3},
        {"kernel": "mad", "output_type": "q8_0", "n_threads": 2},
        {"kernel": "lut", "output_type": "q8_0", "n_threads": 1, "kv_cache": "f16"},
    ],
    ids=["mad", "lut", "mad-q8", "lut-q8-kv16"],
)
def test_fast_decoder_matches_reference_decoder(reference, layout, options):
    path, ids, ref = reference(layout)
    hfx.assert_logits_close(_logits(path, ids, **options), ref)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lut_and_mad_give_identical_logits(reference, layout):
    # Both families compute the same exact int32 sums, and everything after them is shared.
    path, ids, _ = reference(layout, "i2_s")
    for isa in sorted({"ref", BEST}):
        mad = _logits(path, ids, isa=isa, kernel="mad", n_threads=1)
        lut = _logits(path, ids, isa=isa, kernel="lut", n_threads=1)
        np.testing.assert_array_equal(mad, lut)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_thread_count_does_not_change_logits(reference, layout):
    # Threads split rows and attention heads; no sum is split, so results are bit-identical.
    path, ids, _ = reference(layout)
    for kernel in ("mad", "lut"):
        one = _logits(path, ids, kernel=kernel, n_threads=1)
        for n in (2, 3, 5):
            np.testing.assert_array_equal(_logits(path, ids, kernel=kernel, n_threads=n), one)


def test_incremental_decode_with_threads_equals_full_pass(reference):
    path, ids, _ = reference("2b4t-bf16")
    model = bitnet.load(path, n_threads=3, kv_cache="f16")
    full = model.logits(ids)
    from bitnet import _core

    session = _core.Session(model._core, 0, 4, 3, True)  # n_batch 4: prompt split in chunks
    step = [session.decode(np.asarray([i], dtype=np.int32)) for i in ids[:3]]
    rest = session.decode(np.asarray(ids[3:], dtype=np.int32), True)
    got = np.vstack([np.stack(step), rest])
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-4 * float(np.abs(full).max()))


def test_bad_options_raise_clear_errors(reference):
    path, _, _ = reference("2b4t-bf16")
    with pytest.raises(bitnet.ShapeError, match="n_threads"):
        bitnet.load(path, n_threads=0)
    with pytest.raises(bitnet.ShapeError, match="kv_cache"):
        bitnet.load(path, kv_cache="int4")
    with pytest.raises(bitnet.ShapeError, match="output_type"):
        bitnet.load(path, output_type="q2")
    with pytest.raises(bitnet.ShapeError, match="kernel"):
        bitnet.load(path, kernel="fast")
    with pytest.raises(bitnet.UnsupportedError, match="not available"):
        bitnet.load(path, isa="sve2")


def test_model_reports_its_kernels(reference):
    path, _, _ = reference("1bitllm")
    model = bitnet.load(path, kernel="lut", output_type="q8_0", n_threads=2)
    assert model.n_threads == 2
    assert model.kernels == {
        "isa": BEST,
        "linear": {"lut": 7 * model.config["n_layers"]},
        "output": "q8_0",
        "exact_topk": False,
    }
    assert model._core.bytes_per_token > 0


def test_cpu_info_and_forced_isa():
    info = bitnet.cpu_info()
    assert info["isa"] in info["available_isas"]
    assert "ref" in info["available_isas"]
    assert info["hardware_threads"] >= 1
    code = "import bitnet; print(bitnet.cpu_info()['isa'])"
    env = dict(os.environ, BITNET_ISA="ref")
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ref"


AVAILABLE = bitnet.cpu_info()["available_isas"]
X86_LEVELS = [isa for isa in ("avx2", "avx512", "avx512vnni", "avx512vbmi") if isa in AVAILABLE]


def _families(isa):
    """The ternary families this level runs natively (t3 needs the avx512vbmi kernels)."""
    return ["mad", "lut", "t3"] if isa == "avx512vbmi" else ["mad", "lut"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("isa", [isa for isa in AVAILABLE if isa != "ref"])
def test_every_isa_level_matches_reference_decoder(reference, layout, isa):
    path, ids, ref = reference(layout)
    for kernel in _families(isa):
        for output_type in ("f32", "q8_0"):
            got = _logits(path, ids, isa=isa, kernel=kernel, output_type=output_type, n_threads=2)
            hfx.assert_logits_close(got, ref)


@pytest.mark.skipif(len(X86_LEVELS) < 2, reason="needs an AVX-512 CPU")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_avx512_levels_equal_avx2_bit_for_bit(reference, layout):
    # The AVX-512 levels replace integer kernels only (exact sums, bit-identical quantization)
    # and share avx2's float kernels: with the f32 output layer every level, and the 1.67-bit
    # T3 layout, gives avx2's logits bit for bit.
    path, ids, _ = reference(layout, "i2_s")
    want = _logits(path, ids, isa="avx2", kernel="mad", output_type="f32", n_threads=2)
    for isa in X86_LEVELS[1:]:
        for kernel in _families(isa):
            got = _logits(path, ids, isa=isa, kernel=kernel, output_type="f32", n_threads=2)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} {kernel}")


def test_t3_needs_the_vbmi_level(reference):
    path, _, _ = reference("2b4t-bf16")
    with pytest.raises(bitnet.UnsupportedError, match="avx512vbmi"):
        bitnet.load(path, isa="ref", kernel="t3")
