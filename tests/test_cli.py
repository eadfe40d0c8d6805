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
    assert "q8_0 reads" in r.stdout and "exact_topk=True" in r.stdout

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


# -- generate, perplexity, models, help --------------------------------------------------------


def test_generate_streams_with_sampling_options(converted):
    model = str(converted("2b4t-bf16"))
    r = run("generate", "-m", model, "-n", "12", "-t", "0", "In the beginning")
    assert r.returncode == 0, r.stderr
    import bitnet

    expected = bitnet.load(model).generate("In the beginning", max_tokens=12, temperature=0)
    assert r.stdout == expected + ("" if expected.endswith("\n") else "\n")
    args = ("-n", "16", "-t", "1.1", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.02")
    seeded = [run("generate", "-m", model, *args, "--seed", "7", "Hello") for _ in range(2)]
    assert seeded[0].returncode == 0 and seeded[0].stdout == seeded[1].stdout
    # The exact-top-k output layer gives the same tokens.
    topk = run("generate", "-m", model, *args, "--seed", "7", "--exact-topk", "Hello")
    assert topk.returncode == 0 and topk.stdout == seeded[0].stdout
    stop = expected[3:6]
    r = run("generate", "-m", model, "-n", "12", "-t", "0", "--stop", stop, "In the beginning")
    assert r.stdout == expected[: expected.find(stop)] + "\n"


def test_generate_reads_the_prompt_from_stdin(converted):
    model = str(converted("2b4t-bf16"))
    piped = subprocess.run(
        [sys.executable, "-m", "bitnet.cli", "generate", "-m", model, "-n", "6", "-t", "0"],
        input="In the beginning",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    direct = run("generate", "-m", model, "-n", "6", "-t", "0", "In the beginning")
    assert piped.returncode == 0 and piped.stdout == direct.stdout


def test_perplexity_command(converted, tmp_path):
    import bitnet

    text = "In the beginning God created the heaven and the earth. " * 4
    (tmp_path / "t.txt").write_text(text)
    model = str(converted("2b4t-bf16"))
    r = run("perplexity", "-m", model, str(tmp_path / "t.txt"), "--window", "16", "-q")
    assert r.returncode == 0, r.stderr
    expected = bitnet.load(model).perplexity(text, window=16, stride=8)
    assert r.stdout.startswith(f"perplexity {expected:.4f} over ")
    assert "(window 16, stride 8)" in r.stdout


def test_models_command():
    r = run("models", "-v")
    assert r.returncode == 0
    assert "microsoft/bitnet-b1.58-2B-4T-gguf" in r.stdout and "bitnet-2b4t" in r.stdout


@pytest.mark.parametrize("command", ["", "generate", "chat", "perplexity", "convert", "info"])
def test_help(command):
    r = run(*([command] if command else []), "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: bitnet")
    if not command:
        for sub in ("generate", "chat", "perplexity", "convert", "info", "models", "examples:"):
            assert sub in r.stdout
    if command in ("generate", "chat"):
        assert "--temperature" in r.stdout and "--seed" in r.stdout and "--stop" in r.stdout


def test_bad_option_value_is_one_line(converted):
    r = run("generate", "-m", str(converted("2b4t-bf16")), "--top-p", "0", "hi")
    assert r.returncode == 1
    assert r.stderr.startswith("bitnet: error: top_p must be a finite number in (0, 1]")
    assert "Traceback" not in r.stderr


# -- chat, driven through a terminal ----------------------------------------------------------


class Terminal:
    """A command running on a pseudo-terminal, typed into and read like a person would."""

    def __init__(self, *args: str) -> None:
        import os
        import pty

        self.master, slave = pty.openpty()
        # A session of its own with the terminal as its controlling tty, so that Ctrl-C typed
        # into the terminal reaches it as SIGINT, as in a shell.
        become_terminal_owner = (
            "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
            "os.execv(sys.executable, [sys.executable, '-m', 'bitnet.cli', *sys.argv[1:]])"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", become_terminal_owner, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
            start_new_session=True,
            env={**os.environ, "TERM": "dumb"},
        )
        os.close(slave)
        self.screen = ""  # everything printed so far
        self.pos = 0  # how much of it the test has looked at

    def read_some(self, timeout: float = 120.0) -> None:
        """Waits for more output."""
        import os
        import select

        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            raise AssertionError(f"nothing printed for {timeout}s; screen:\n{self.screen}")
        try:
            data = os.read(self.master, 4096)
        except OSError:  # the program ended
            data = b""
        if not data:
            raise AssertionError(f"the program ended; screen:\n{self.screen}")
        self.screen += data.decode(errors="replace").replace("\r\n", "\n")

    def read_until(self, text: str, timeout: float = 120.0) -> str:
        """What was printed from where the test last looked up to and including text."""
        import time

        deadline = time.monotonic() + timeout
        while text not in self.screen[self.pos :]:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout}s; screen:\n{self.screen}")
            self.read_some(timeout)
        end = self.screen.index(text, self.pos) + len(text)
        out, self.pos = self.screen[self.pos : end], end
        return out

    def type(self, keys: str) -> None:
        import os

        os.write(self.master, keys.encode())

    def wait(self) -> int:
        return self.proc.wait(timeout=60)

    def __enter__(self) -> Terminal:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        import os

        if self.proc.poll() is None:
            self.proc.kill()  # a failed test leaves nothing running
            self.proc.wait()
        os.close(self.master)


def test_chat_session_in_a_terminal(converted):

    model_path = str(converted("2b4t-bf16"))
    with Terminal("chat", "-m", model_path, "-t", "0", "-n", "8", "--system", "Be brief.") as t:
        drive_chat(t, model_path)


def drive_chat(t: Terminal, model_path: str) -> None:
    import bitnet

    t.read_until("/help for commands")
    t.read_until("> ")
    t.type("In the beginning\n")
    reply_screen = t.read_until("> ")

    model = bitnet.load(model_path)
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "In the beginning"},
    ]
    reply = model.chat(history, max_tokens=8, temperature=0)
    assert reply.strip() in reply_screen

    t.type("And then?\n")
    second = t.read_until("> ")
    history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
    assert model.chat(history, max_tokens=8, temperature=0).strip() in second

    t.type("/history\n")
    shown = t.read_until("> ")
    assert "[system] Be brief." in shown and "[user] In the beginning" in shown
    assert "[user] And then?" in shown and "[assistant]" in shown
    t.type("/reset\n")
    assert "(conversation cleared)" in t.read_until("> ")
    t.type("/history\n")
    shown = t.read_until("> ")
    assert "[system] Be brief." in shown and "[user]" not in shown
    t.type("/nonsense\n")
    assert "unknown command /nonsense" in t.read_until("> ")
    t.type("/help\n")
    assert "/reset" in t.read_until("> ")
    t.type("/exit\n")
    assert t.wait() == 0


def test_chat_ctrl_c_stops_the_reply_and_ctrl_d_quits(converted):
    import bitnet

    # Greedy replies of the tiny model that run far past 200 tokens without an end token, in
    # a context far larger than the tiny model fills quickly: they run until interrupted.
    model_path = str(converted("2b4t-bf16"))
    model = bitnet.load(model_path, n_ctx=1024)
    for text in ("Hello", "The earth"):
        history = [{"role": "user", "content": text}]
        assert len(model.chat(history, max_tokens=200, temperature=0)) < len(
            model.chat(history, max_tokens=240, temperature=0)
        )
    with Terminal("chat", "-m", model_path, "--ctx", "60000", "-n", "60000", "-t", "0") as t:
        interrupt_replies(t)


def interrupt_replies(t: Terminal) -> None:
    t.read_until("> ")
    for text in ("Hello", "The earth"):
        t.type(text + "\n")
        t.read_until(text + "\n")  # the echo
        while len(t.screen) - t.pos < 40:
            t.read_some()  # part of the reply is on screen: it is being generated
        t.type("\x03")  # Ctrl-C
        t.read_until("(stopped)")
        t.read_until("> ")
        t.type("/history\n")
        assert f"[user] {text}" in t.read_until("> ")  # the partial reply is kept
        t.type("/reset\n")
        t.read_until("> ")
    t.type("\x04")  # Ctrl-D
    assert t.wait() == 0
