"""The installed `bitnet` command's surface: help, version, flag checking, exit statuses, error
messages that name flags, pipes closed early."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import bitnet_command, run, run_into_closed_pipe

COMMANDS = [
    "generate",
    "chat",
    "serve",
    "perplexity",
    "pull",
    "models",
    "rm",
    "info",
    "convert",
    "bench",
]
PYTHON_NAMES = re.compile(
    r"\b(n_ctx|n_threads|max_tokens|top_k|top_p|min_p|repeat_penalty|repeat_last_n|"
    r"overwrite=|revision=|weight_type|embedding_type)\b"
)


def test_top_level_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: bitnet")
    for command in COMMANDS:
        assert f"\n    {command}" in r.stdout, command
    assert "examples:" in r.stdout and "bundled" in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command):
    r = run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: bitnet {command}")
    if command in ("generate", "chat", "serve", "perplexity", "info", "bench"):
        assert "-m MODEL" in r.stdout and "bundled" in r.stdout  # one rule for -m
    if command in ("generate", "chat"):
        for flag in ("--temp", "--seed", "--stop TEXT", "--ctx", "--threads"):
            assert flag in r.stdout, flag
        assert "--verbose" in r.stdout and "--quiet" in r.stdout


def test_version():
    from bitnet import __version__

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"bitnet {__version__}"
    m = subprocess.run(
        [sys.executable, "-m", "bitnet", "--version"], capture_output=True, text=True, check=False
    )
    assert m.returncode == 0 and m.stdout == r.stdout


def test_no_command_is_a_usage_error():
    r = run()
    assert r.returncode == 2 and r.stderr.startswith("usage: bitnet")


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("generate", "-c", "-5", "hi"), "-c/--ctx"),
        (("generate", "--ctx", "abc", "hi"), "-c/--ctx"),
        (("generate", "-t", "0", "hi"), "-t/--threads"),
        (("generate", "-n", "-1", "hi"), "-n/--max-tokens"),
        (("generate", "--top-k", "-1", "hi"), "--top-k"),
        (("generate", "--top-k", str(1 << 40), "hi"), "--top-k"),
        (("generate", "--top-p", "0", "hi"), "--top-p"),
        (("generate", "--temp", "inf", "hi"), "--temp"),
        (("generate", "--temp", "warm", "hi"), "--temp"),
        (("generate", "--min-p", "2", "hi"), "--min-p"),
        (("generate", "--repeat-penalty", "0", "hi"), "--repeat-penalty"),
        (("generate", "--repeat-last-n", "-3", "hi"), "--repeat-last-n"),
        (("generate", "--presence-penalty", "5", "hi"), "--presence-penalty"),
        (("generate", "-s", "-1", "hi"), "-s/--seed"),
        (("generate", "-s", "1.5", "hi"), "-s/--seed"),
        (("generate", "--revision", "v2", "-m", "models/x.gguf", "hi"), "--revision"),
        (("chat", "-c", "-1"), "-c/--ctx"),
        (("chat", "--top-p", "1.5"), "--top-p"),
        (("perplexity", "--window", "-4", "f.txt"), "--window"),
        (("convert", "a", "b", "--weight-type", "q4_0"), "--weight-type"),
        (("bench", "-t", "1,x"), "-t/--threads"),
        (("bench", "-r", "0"), "-r/--reps"),
        (("bench", "-p", "0", "-n", "0"), "-p/-n"),
        (("pull",), "MODEL"),
    ],
)
def test_flag_errors_name_the_flag_with_the_commands_usage(args, flag):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    command = args[0]
    assert r.stderr.startswith(f"usage: bitnet {command}"), r.stderr
    assert f"bitnet {command}: error:" in r.stderr and flag in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not PYTHON_NAMES.search(r.stderr), r.stderr


def test_unknown_arguments_get_the_commands_usage():
    r = run("generate", "--bogus", "hi")
    assert r.returncode == 2 and r.stderr.startswith("usage: bitnet generate")
    assert "unrecognized arguments: --bogus" in r.stderr
    r = run("generate", "In", "the", "beginning")
    assert r.returncode == 2 and "quote a prompt" in r.stderr
    r = run("info", "a.gguf", "-m", "b.gguf")
    assert r.returncode == 2 and "-m/--model" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("info", "/nonexistent.gguf"),
        ("info", "-m", "/nonexistent.gguf"),
        ("generate", "-m", "/nonexistent.gguf", "hi"),
        ("chat", "-m", "/nonexistent.gguf"),
        ("perplexity", "-m", "/nonexistent.gguf", "/nonexistent.txt"),
        ("bench", "-m", "/nonexistent.gguf"),
        ("convert", "/nonexistent", "/tmp/x.gguf"),
    ],
)
def test_errors_are_one_line(args):
    r = run(*args)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("bitnet: error: ") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "/nonexistent" in r.stderr


def test_corrupt_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    for args in (("info", str(bad)), ("generate", "-m", str(bad), "hi")):
        r = run(*args)
        assert r.returncode == 1 and r.stderr.startswith("bitnet: error:"), r.stderr
        assert "Traceback" not in r.stderr and str(bad) in r.stderr


def test_convert_errors_name_flags_and_the_destination(hf_models, tmp_path):
    src = str(hf_models["2b4t-packed"].path)
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep")
    r = run("convert", src, str(out), "-q")
    assert r.returncode == 1 and "exists; --overwrite replaces it" in r.stderr
    assert out.read_bytes() == b"keep" and not PYTHON_NAMES.search(r.stderr)
    missing = tmp_path / "nonexistdir" / "x.gguf"
    r = run("convert", src, str(missing), "-q")
    assert r.returncode == 1 and str(missing.parent) in r.stderr and ".part" not in r.stderr
    r = run("convert", src, str(tmp_path / "y.gguf"), "--revision", "v1")
    assert r.returncode == 2 and "--revision" in r.stderr
    r = run("convert", src, str(out), "--overwrite", "-q")
    assert r.returncode == 0 and r.stdout.strip() == str(out) and r.stderr == ""
    r = run("info", str(out))
    assert "general.architecture" in r.stdout and "'bitnet'" in r.stdout
    assert "blk.1.ffn_down.weight" in r.stdout and "TQ2_0" in r.stdout
    assert "q8_0 reads" in r.stdout and "exact_topk=True" in r.stdout


# -- pipes closed early: `| head` ends the command quietly, status 0 ---------------------------


@pytest.mark.parametrize(
    "args",
    [("info",), ("models", "--known"), ("info", "--help"), ("--help",)],
)
def test_closed_pipe_is_not_an_error(args):
    status, err = run_into_closed_pipe(*args, keep=20)
    assert status == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err and "BrokenPipe" not in err


def test_bundled_model_is_the_default_everywhere():
    from bitnet.api import default_model_path

    r = run("info")
    assert r.returncode == 0 and str(default_model_path()) in r.stdout
    r = run("models")
    assert r.returncode == 0 and "(bundled" in r.stdout


def test_default_thread_count_is_the_physical_cores():
    """bitnet's default (C++) against a count of /sys topology made here (Linux)."""
    import bitnet

    if not hasattr(os, "sched_getaffinity") or not Path("/sys/devices/system/cpu").is_dir():
        pytest.skip("no CPU topology to compare with on this system")
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        for name in ("core_cpus_list", "thread_siblings_list"):
            if (topo / name).is_file():
                cores.add((topo / name).read_text().strip())
                break
        else:
            cores.add(f"cpu{cpu}")
    info = bitnet.cpu_info()
    assert info["default_threads"] == len(cores)
    assert 1 <= info["default_threads"] <= info["hardware_threads"]
    assert bitnet.load(bitnet.api.default_model_path()).n_threads == len(cores)


def test_prompts_with_bytes_that_are_not_utf8():
    """Arguments and stdin are bytes: a stray one becomes U+FFFD, never a tokenizer error."""
    cmd = [*bitnet_command(), "generate", "-n", "3", "-q"]
    for extra, data in (([b"\xff\xfe abc"], None), ([], b"\xff\xfe\ncaf\xe9\n")):
        r = subprocess.run(
            [*(c.encode() for c in cmd), *extra],
            input=data,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert r.returncode == 0 and r.stderr == b"", r.stderr
    r = subprocess.run(
        [*bitnet_command(), "chat", "-n", "3", "-q"],
        input=b"hi \xff\n/history\n",
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0 and "[user] hi \ufffd".encode() in r.stdout, r.stderr
