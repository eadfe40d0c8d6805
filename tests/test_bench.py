"""bench/random_model.py and `bitnet bench`: the structure of what they write, never timings."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import bitnet
from bitnet import _core
from bitnet.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _random_model() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "random_model", ROOT / "bench" / "random_model.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["random_model"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "tiny.gguf"
    _random_model().write_random_model(out, "tiny", seed=1)
    return out


@pytest.mark.parametrize("weight_type", ["tq2_0", "tq1_0", "i2_s"])
@pytest.mark.parametrize("embedding_type", ["f16", "q8_0"])
def test_random_model_loads(tmp_path: Path, weight_type: str, embedding_type: str) -> None:
    rm = _random_model()
    out = rm.write_random_model(
        tmp_path / "m.gguf", "tiny", weight_type=weight_type, embedding_type=embedding_type
    )
    f = _core.GgufFile(str(out))
    assert f.get("general.architecture") == "bitnet"
    assert len(f.get("tokenizer.ggml.tokens")) == 512
    assert f.get("tokenizer.ggml.model") == "llama"
    names = {t["name"]: t for t in f.tensors()}
    assert names["token_embd.weight"]["type_name"] == embedding_type.upper()
    assert "blk.1.ffn_sub_norm.weight" in names and "blk.0.attn_sub_norm.weight" in names
    m = _core.Model(str(out))
    info = m.linear_info()
    assert len(info) == 2 * 7
    codes, scales = m.linear_codes("blk.0.ffn_up.weight")
    assert codes.shape == (512, 256)
    frac = [float(np.mean(codes == v)) for v in (-1, 0, 1)]
    assert all(0.3 < x < 0.37 for x in frac), frac  # uniform ternary: a third zeros
    assert np.allclose(scales, scales[0]) and scales[0] > 0
    logits = _core.Session(m, 16, 16).decode(np.array([1, 2, 3], dtype=np.int32))
    assert logits.shape == (512,) and np.isfinite(logits).all()


def test_random_model_rejects_unknown_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        _random_model().write_random_model(tmp_path / "x.gguf", "huge")


def test_bench_json(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["bench", "-m", str(tiny), "-p", "8", "-n", "4", "-t", "1,2", "-r", "1", "-o", "json", "-q"]
    )
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    for key in (
        "date",
        "commit",
        "cpu",
        "isa",
        "model_size_bytes",
        "model_params",
        "bytes_read_per_token",
        "results",
    ):
        assert key in d
    assert d["model_size_bytes"] == tiny.stat().st_size
    assert d["isa"] == _core.kernel_isa() or d["isa"]
    tests = [(r["test"], r["threads"]) for r in d["results"]]
    assert tests == [("pp8", 1), ("tg4", 1), ("pp8", 2), ("tg4", 2)]
    for r in d["results"]:
        assert r["reps"] == 1 and len(r["samples_s"]) == 1
        assert r["tokens_per_s"] > 0
        assert r["min_tokens_per_s"] <= r["tokens_per_s"] <= r["max_tokens_per_s"]
        assert (r["gb_per_s"] is not None) == r["test"].startswith("tg")


def test_bench_markdown(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "bench",
            "-m",
            str(tiny),
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "2",
            "-o",
            "md",
            "-q",
            "--membw",
            "10",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "commit" in out and "CPU" in out
    rows = [line for line in out.splitlines() if line.startswith("| random-tiny")]
    assert len(rows) == 2
    assert "| pp8 |" in rows[0] and "| tg4 |" in rows[1]
    assert rows[1].rstrip().endswith("% |")  # tg compared with the given 10 GB/s


def test_bench_api_skips_tests(tiny: Path) -> None:
    from bitnet.bench import run_bench, to_markdown

    report = run_bench(tiny, n_prompt=0, n_gen=2, reps=1)
    assert [r.test for r in report.results] == ["tg2"]
    assert "tg2" in to_markdown(report)
    assert report.model_params > 0 and bitnet.__version__


def test_params_are_shown_in_their_unit() -> None:
    from bitnet.bench import params_text

    assert params_text(4_700_000) == "4.70 M"  # the bundled model: not "0.00 B"
    assert params_text(2_412_000_000) == "2.41 B"
    assert params_text(850_000) == "850.00 K"
    assert params_text(12) == "12"


@pytest.mark.parametrize(
    "argv",
    [
        ["-t", "1,x"],
        ["-t", "0"],
        ["-r", "0"],
        ["-p", "0", "-n", "0"],
        ["--membw", "fast"],
    ],
)
def test_bench_bad_arguments(
    tiny: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "-m", str(tiny), "-q", *argv]) == 2  # an argument error
    err = capsys.readouterr().err
    assert err.startswith("usage: bitnet bench") and "bitnet bench: error: argument" in err


def test_bench_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "-m", str(tmp_path / "none.gguf"), "-q"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_bench_depth_and_kv_cache(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "-m", str(tiny), "-p", "8", "-n", "4", "-r", "1", "-d", "0,16", "-q"]
    assert main([*argv, "--kv-cache", "q8_0", "-o", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    tests = [(r["test"], r["n_depth"], r["kv_cache"]) for r in d["results"]]
    assert tests == [
        ("pp8", 0, "q8_0"),
        ("tg4", 0, "q8_0"),
        ("pp8 @ d16", 16, "q8_0"),
        ("tg4 @ d16", 16, "q8_0"),
    ]
    assert main([*argv, "-o", "md"]) == 0
    out = capsys.readouterr().out
    assert "| tg4 @ d16 |" in out and "KV cache: f16" in out


def test_bench_parallel(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "-m", str(tiny), "-p", "8", "-n", "4", "-r", "1", "--parallel", "1,3", "-q"]
    assert main([*argv, "-o", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    got = [(r["test"], r["n_parallel"]) for r in d["results"]]
    assert got == [("pp8 x1", 1), ("tg4 x1", 1), ("pp8 x3", 3), ("tg4 x3", 3)]
    for r in d["results"]:
        assert r["per_seq_tokens_per_s"] == pytest.approx(r["tokens_per_s"] / r["n_parallel"])
        assert (r["gb_per_s"] is not None) == r["test"].startswith("tg")
    assert main([*argv, "-o", "md"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "| tg4 x3 |" in line]
    assert len(rows) == 1 and rows[0].count("|") == 12  # the t/s per seq column is there


@pytest.mark.parametrize("argv", [["-d", "-1"], ["--parallel", "0"], ["-d", "x"]])
def test_bench_bad_depth_and_parallel(
    tiny: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "-m", str(tiny), "-q", *argv]) == 2  # an argument error, with usage
    err = capsys.readouterr().err
    assert err.startswith("usage: bitnet bench") and f"argument {argv[0]}" in err.replace(
        "-d/--depth", "-d"
    )


def test_bench_parallel_with_depth_is_refused(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "-m", str(tiny), "-q", "--parallel", "2", "-d", "8"]) == 1
    assert capsys.readouterr().err.startswith("bitnet: error:")


def test_bench_exact_topk(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "-m", str(tiny), "-p", "8", "-n", "4", "-r", "1", "-q", "-o", "json"]
    assert main([*argv, "--exact-topk"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["exact_topk"] == 1 and 0 < d["topk_pass_bytes"] < d["output_bytes"]
    pp, tg = d["results"]
    assert pp["topk"] == 0 and pp["exact_rows_fraction"] is None
    assert tg["topk"] == 1 and 0 < tg["exact_rows_fraction"] <= 1
    body = d["bytes_read_per_token"] - d["output_bytes"]
    want = body + d["topk_pass_bytes"] + tg["exact_rows_fraction"] * d["output_bytes"]
    assert tg["bytes_read_per_token"] == int(want)
    assert tg["gb_per_s"] == pytest.approx(want * tg["tokens_per_s"] / 1e9, rel=1e-6)
    assert main([*argv, "--exact-topk", "5", "--parallel", "2"]) == 0
    d = json.loads(capsys.readouterr().out)
    tg = d["results"][1]
    assert tg["test"] == "tg4 x2" and tg["topk"] == 5 and tg["exact_rows_fraction"] > 0
    assert main([*argv[:-2], "--exact-topk", "3"]) == 0
    assert "output layer: exact top-3" in capsys.readouterr().out
    assert main(["bench", "-m", str(tiny), "-q", "--exact-topk", "-2"]) == 2  # usage error
    assert "--exact-topk" in capsys.readouterr().err
