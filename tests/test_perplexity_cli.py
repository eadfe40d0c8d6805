"""``bitnet perplexity``: the llama.cpp method, writing and reading KL base files, KL mode."""

from __future__ import annotations

import re

import pytest

import bitnet
from bitnet.cli import main
from bitnet.eval import kl_divergence, perplexity
from bitnet.eval.logits_file import LogitsReader

TEXT = (
    "In the beginning God created the heaven and the earth. And the earth was without form, "
    "and void; and darkness was upon the face of the deep. The quick brown fox jumps."
)


@pytest.fixture(scope="module")
def paths(converted, tmp_path_factory):
    root = tmp_path_factory.mktemp("ppl")
    text = root / "t.txt"
    text.write_text(TEXT)
    return str(converted("2b4t-bf16")), str(text), root


def cli(capsys, *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_llama_cpp_method_prints_like_llama_perplexity(paths, capsys):
    model, text, _ = paths
    out = cli(capsys, "perplexity", "-m", model, text, "--method", "llama.cpp", "--window", "16")
    expected = perplexity(bitnet.load(model), TEXT, method="llama.cpp", window=16)
    running = re.findall(r"\[(\d+)\]([0-9.]+),", out)
    assert [int(i) for i, _ in running] == list(range(1, len(expected.running_ppl) + 1))
    assert float(running[-1][1]) == pytest.approx(expected.ppl, abs=1e-4)
    assert f"Final estimate: PPL = {expected.ppl:.4f} +/- {expected.stderr:.5f}" in out


def test_sliding_method_is_the_default(paths, capsys):
    model, text, _ = paths
    out = cli(capsys, "perplexity", "-m", model, text, "--window", "16", "-q")
    ppl = bitnet.load(model).perplexity(TEXT, window=16, stride=8)
    assert out.startswith(f"perplexity {ppl:.4f} over ") and "(window 16, stride 8)" in out


def test_kl_base_file_then_kl_divergence(paths, capsys):
    model, text, root = paths
    base = str(root / "base.kld")
    q8 = ("--output-type", "q8_0", "--kv-cache", "f16")
    cli(capsys, "perplexity", "-m", model, text, "--window", "16", "--kl-divergence-base", base)
    with LogitsReader(base) as f:
        assert f.n_ctx == 16
    out = cli(
        capsys, "perplexity", "-m", model, text, *q8, "--kl-divergence-base", base,
        "--kl-divergence", "-q",
    )  # fmt: skip
    expected = kl_divergence(
        bitnet.load(model, output_type="q8_0", kv_cache="f16"), base=base, n_ctx=16
    )
    assert f"Mean    KLD: {expected.kl_mean:10.6f}" in out
    assert f"Same top p: {100 * expected.same_top:6.3f}" in out
    assert f"Mean PPL(Q)                   : {expected.ppl:10.6f}" in out


def test_kl_divergence_against_the_exact_path(paths, capsys):
    model, text, _ = paths
    out = cli(capsys, "perplexity", "-m", model, text, "--window", "16", "--kl-divergence", "-q")
    exact = bitnet.load(model, output_type="f32", kv_cache="f32", isa="ref")
    expected = kl_divergence(bitnet.load(model), TEXT, base=exact, n_ctx=16)
    assert f"Mean    KLD: {expected.kl_mean:10.6f}" in out
    assert f"({expected.n_tokens} tokens compared)" in out


def test_bad_combinations_are_one_line_errors(paths, capsys):
    model, text, _ = paths
    assert main(["perplexity", "-m", model, text, "--chunks", "2"]) == 1
    assert "--chunks applies to --method llama.cpp" in capsys.readouterr().err
    assert main(["perplexity", "-m", model, text, "--method", "llama.cpp", "--window", "64"]) == 1
    assert "needs at least 2 * 64 = 128 tokens" in capsys.readouterr().err
