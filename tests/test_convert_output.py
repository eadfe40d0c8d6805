"""How the converter writes its output: a temporary file of its own beside the destination,
fsync'ed and renamed; nothing left behind on errors, Ctrl-C or termination signals."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bitnet

# Converts argv[1] to argv[2], announcing each tensor on stdout and sleeping between them, so
# that a test can interrupt it in the middle of writing.
SLOW_CONVERT = textwrap.dedent(
    """
    import sys, time
    import bitnet
    from bitnet.convert import hf

    plain = hf._progress

    def slow(plan, enabled, label):
        for t in plain(plan, False, label):
            print("writing", t.name, flush=True)
            time.sleep(float(sys.argv[3]))
            yield t

    hf._progress = slow
    bitnet.convert(sys.argv[1], sys.argv[2], progress=False, overwrite=True)
    print("done", flush=True)
    """
)


def leftovers(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.part"))


def start_slow(src: Path, dst: Path, delay: float = 0.2) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_CONVERT, str(src), str(dst), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_writing(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("writing"), (line, proc.stderr.read() if proc.stderr else "")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_during_conversion_leaves_nothing(hf_models, tmp_path, sig):
    dst = tmp_path / "out.gguf"
    proc = start_slow(hf_models["2b4t-bf16"].path, dst)
    wait_for_writing(proc)
    assert leftovers(tmp_path)  # the temporary file exists while it writes
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode != 0 and "KeyboardInterrupt" in err
    else:
        assert proc.returncode == -sig  # ended by the signal, as without our handler
    assert not dst.exists() and leftovers(tmp_path) == []


def test_a_callers_signal_handler_still_runs(hf_models, tmp_path):
    script = (
        "import signal, sys\n"
        "def handler(signum, frame):\n"
        "    print('caller handler', flush=True)\n"
        "    sys.exit(7)\n"
        "signal.signal(signal.SIGTERM, handler)\n" + SLOW_CONVERT
    )
    dst = tmp_path / "out.gguf"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(hf_models["2b4t-bf16"].path), str(dst), "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_writing(proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 7 and "caller handler" in out
    assert not dst.exists() and leftovers(tmp_path) == []


def test_sigkill_leftovers_are_removed_by_the_next_conversion(hf_models, tmp_path):
    dst = tmp_path / "out.gguf"
    proc = start_slow(hf_models["2b4t-bf16"].path, dst)
    wait_for_writing(proc)
    proc.kill()
    proc.communicate(timeout=60)
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and f".{proc.pid}." in stale[0].name
    live = tmp_path / f".out.gguf.{os.getpid()}.feedface.part"  # a live process's: kept
    live.write_bytes(b"")
    bitnet.convert(hf_models["2b4t-bf16"].path, dst, progress=False)
    assert dst.is_file() and leftovers(tmp_path) == [live]


def test_concurrent_conversions_to_one_destination(hf_models, converted, tmp_path):
    dst = tmp_path / "out.gguf"
    procs = [start_slow(hf_models[name].path, dst, delay=0.02) for name in ("2b4t-bf16", "1bitllm")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "done" in out, err
    # The file is one conversion or the other, whole: never a mix of the two.
    whole = {
        converted(name, "tq2_0", "f16").read_bytes()[-4096:] for name in ("2b4t-bf16", "1bitllm")
    }
    assert dst.read_bytes()[-4096:] in whole
    model = bitnet.load(dst)
    assert model.n_vocab in (hf_models["2b4t-bf16"].vocab_size, hf_models["1bitllm"].vocab_size)
    assert leftovers(tmp_path) == []


def test_errors_name_the_destination_not_a_temporary_file(hf_models, tmp_path):
    missing = tmp_path / "nonexistdir" / "x.gguf"
    with pytest.raises(FileNotFoundError) as e:
        bitnet.convert(hf_models["2b4t-bf16"].path, missing, progress=False)
    assert str(missing.parent) in str(e.value) and ".part" not in str(e.value)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(PermissionError) as p:
            bitnet.convert(hf_models["2b4t-bf16"].path, ro / "x.gguf", progress=False)
        assert "x.gguf" in str(p.value) and ".part" not in str(p.value)


def test_no_clobber_when_the_destination_appears_meanwhile(hf_models, tmp_path, monkeypatch):
    from bitnet.convert import hf

    dst = tmp_path / "out.gguf"
    plain = hf._progress

    def racing(plan, enabled, label):
        yield from plain(plan, False, label)
        dst.write_bytes(b"written by someone else")

    monkeypatch.setattr(hf, "_progress", racing)
    with pytest.raises(FileExistsError):
        bitnet.convert(hf_models["2b4t-bf16"].path, dst, progress=False)
    assert dst.read_bytes() == b"written by someone else" and leftovers(tmp_path) == []


def test_output_is_synced_and_readable(hf_models, tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_mode)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    old = os.umask(0o027)
    try:
        out = bitnet.convert(hf_models["2b4t-bf16"].path, tmp_path / "o.gguf", progress=False)
    finally:
        os.umask(old)
    assert any(stat.S_ISREG(m) for m in synced) and any(stat.S_ISDIR(m) for m in synced)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # 0o666 under the umask, like open()
