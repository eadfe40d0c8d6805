"""Writing an output file so that readers see either nothing (or the old file) or the whole file.

:func:`atomic_output` gives a temporary file of its own in the destination's directory (so the
final rename stays on one filesystem and is atomic): ``.<name>.<pid>.<random>.part``. Two
conversions to the same destination never share a temporary file; the last to finish wins,
each file whole. On success the data is fsync'ed, renamed over the destination (or, without
``overwrite``, linked to it only if it still does not exist) and the directory entry fsync'ed.
On any error, Ctrl-C, or a catchable termination signal (SIGTERM, SIGHUP, SIGQUIT) the
temporary file is removed; the signal is then delivered again to whatever handled it before
(by default: the process ends as it would have). SIGKILL cannot be caught: the next conversion
to the same destination removes temporary files left by processes that no longer exist.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import BitnetError

__all__ = ["atomic_output"]

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name)
)


class _Signalled(BaseException):
    """Raised inside the conversion by a termination signal, so that cleanup code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _remove_stale_parts(dst: Path) -> None:
    """Deletes .<name>.<pid>.*.part files of dst whose writing process is gone (SIGKILL)."""
    prefix = f".{dst.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(dst.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".part")):
                continue
            pid_text = name[len(prefix) :].split(".", 1)[0]
            if (
                pid_text.isdigit()
                and int(pid_text) != os.getpid()
                and not _pid_alive(int(pid_text))
            ):
                with contextlib.suppress(OSError):
                    Path(entry.path).unlink()


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not every platform can open a directory; the rename itself is still atomic
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """While active (main thread only), termination signals raise _Signalled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Signalled(signum)

    previous: dict[int, Any] = {}
    for sig in _SIGNALS:
        with contextlib.suppress(OSError, ValueError):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _no_clobber_rename(tmp: Path, dst: Path) -> None:
    """Renames tmp to dst unless dst exists, atomically where the filesystem has hard links."""
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if dst.exists():  # no hard links here: a check, then the rename
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        tmp.replace(dst)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_output(dst: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yields a temporary path to write; on success it becomes dst, on failure it is removed.

    Raises:
        FileNotFoundError: dst's directory does not exist.
        FileExistsError: dst exists (checked first and again at the end) and overwrite is False.
        OSError: Writing failed (the message names dst, not the temporary file).
    """
    directory = dst.parent
    if not directory.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, f"the directory of the output file {dst} does not exist", str(directory)
        )
    if not overwrite and dst.exists():
        raise FileExistsError(errno.EEXIST, "the output file exists", str(dst))
    _remove_stale_parts(dst)
    tmp = directory / f".{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write the output file {dst}: {e.strerror}") from None
    signum = 0
    try:
        with _signals_raise():
            try:
                yield tmp
                os.fsync(fd)
                os.fchmod(fd, 0o666 & ~_umask())
                if overwrite:
                    tmp.replace(dst)
                else:
                    _no_clobber_rename(tmp, dst)
            except _Signalled as s:
                signum = s.signum
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "the output file appeared meanwhile", str(dst)
        ) from None
    except OSError as e:
        if e.filename is not None and Path(e.filename) == tmp:
            raise type(e)(e.errno, f"writing {dst}: {e.strerror}") from None
        raise
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)
    if signum:
        # Deliver the signal again to the handler that was there before (default: exit).
        signal.raise_signal(signum)
        raise BitnetError(f"writing {dst} was interrupted by signal {signum}")
    _fsync_dir(directory)
