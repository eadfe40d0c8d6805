"""Running the installed ``bitnet`` command as a user does: in a subprocess, through pipes, or
on a pseudo-terminal that is typed into."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest


def bitnet_command() -> list[str]:
    """The installed `bitnet` entry point of this environment (as users run it)."""
    script = Path(sys.executable).parent / "bitnet"
    found = str(script) if script.is_file() else shutil.which("bitnet")
    if found is None:
        pytest.fail("the `bitnet` command is not installed in this environment (pip install .)")
    return [found]


def run(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*bitnet_command(), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        input=input,
        env=env,
    )


def run_into_closed_pipe(*args: str, keep: int) -> tuple[int, str]:
    """Runs bitnet with stdout read for `keep` bytes, then closed (like `| head -c keep`);
    returns (exit status, stderr)."""
    proc = subprocess.Popen(
        [*bitnet_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(keep)
    proc.stdout.close()
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return proc.wait(timeout=300), err


class Terminal:
    """A command running on a pseudo-terminal, typed into and read like a person would."""

    def __init__(self, *args: str) -> None:
        import pty

        self.master, slave = pty.openpty()
        # A session of its own with the terminal as its controlling tty, so that Ctrl-C typed
        # into the terminal reaches it as SIGINT, as in a shell; then the installed command.
        become_terminal_owner = (
            "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", become_terminal_owner, *bitnet_command(), *args],
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
        deadline = time.monotonic() + timeout
        while text not in self.screen[self.pos :]:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout}s; screen:\n{self.screen}")
            self.read_some(timeout)
        end = self.screen.index(text, self.pos) + len(text)
        out, self.pos = self.screen[self.pos : end], end
        return out

    def read_to_end(self, timeout: float = 120.0) -> str:
        """Everything printed from where the test last looked until the program ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.read_some(timeout)
            except AssertionError:
                break
        out, self.pos = self.screen[self.pos :], len(self.screen)
        return out

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self) -> int:
        return self.proc.wait(timeout=60)

    def __enter__(self) -> Terminal:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # a failed test leaves nothing running
            self.proc.wait()
        os.close(self.master)
