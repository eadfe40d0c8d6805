"""Validation of API arguments: the options of :func:`bitnet.load`, the memory they imply, model
paths and token ids.

Every option is checked for type and range before the C++ core sees it, so a bad value raises
:class:`~bitnet.errors.ParameterError` naming the option, the expected and the found value
(never a pybind11 signature dump, never a silent default). After the weights are loaded,
:func:`check_memory` compares what the KV cache and the scratch buffers would reserve with the
memory the process may use, and refuses a context that cannot fit, naming the option or the
file's key that asked for it.

The rules (docs/usage.md, "Limits"):

* ``n_ctx``: 0 (the model's ``<arch>.context_length``) or 1 .. 2**24 tokens.
* ``n_batch``: 1 .. 2**20 tokens (the session uses min(n_batch, n_ctx)).
* ``n_threads``: None (every hardware thread) or 1 .. 4 x the hardware threads (at most 1024):
  more threads than that only add contention.
* ``n_parallel``: 1 .. 4096, at most n_batch; ``kv_budget``: None or 1 .. 2**40 positions (at
  least n_ctx, checked once n_ctx is known); ``max_queue``: 0 .. 2**20.
* The KV cache reservation (the engine's kv_budget positions, default n_parallel x n_ctx, and
  one session's n_ctx, K and V of every layer) plus the scratch of the batches must not exceed
  the memory limit: the smallest of the physical RAM, the
  cgroup's ``memory.max`` and ``RLIMIT_AS`` (less what the process has mapped already). The
  reservation is address space, not resident memory (pages are touched as positions fill up),
  so this is the rule "a context the machine could never fill is refused", not a budget.
"""

from __future__ import annotations

import os
import resource
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import FormatError, ParameterError

__all__ = [
    "KV_CACHE_TYPES",
    "MAX_N_BATCH",
    "MAX_N_CTX",
    "OUTPUT_TYPES",
    "check_load_options",
    "check_memory",
    "check_model_path",
    "check_token_ids",
    "max_threads",
    "memory_limit",
    "model_path",
    "session_bytes",
]

MAX_N_CTX = 1 << 24  # the C++ session's limit (positions of one sequence)
MAX_N_BATCH = 1 << 20  # the batched decoder's limit (tokens of one step)
# Bytes per cached value (q8_0: blocks of 32 int8 values and an fp16 scale).
KV_CACHE_TYPES: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "f32": 4.0}
MAX_N_PARALLEL = 4096
MAX_QUEUE = 1 << 20
OUTPUT_TYPES = ("auto", "q8_0", "f32")
KERNELS = ("mad", "lut", "t3")


def max_threads() -> int:
    """The most threads a forward pass may use: 4 x the hardware threads, at most 1024."""
    return min(1024, 4 * (os.cpu_count() or 1))


def _int(name: str, value: Any, lo: int, hi: int, note: str = "") -> int:
    # bool is an int, but True as a length is a mistake; floats are never truncated.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(name, f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ParameterError(name, f"{name} must be in [{lo}, {hi}]{note}, got {value}")
    return int(value)


def _choice(name: str, value: Any, choices: tuple[str, ...], *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices) + (" or None" if optional else "")
        raise ParameterError(name, f"{name} must be one of {allowed}, got {value!r}")


def check_load_options(
    *,
    n_ctx: Any = 0,
    n_batch: Any = 512,
    n_threads: Any = None,
    kv_cache: Any = "f16",
    n_parallel: Any = 4,
    kv_budget: Any = None,
    max_queue: Any = 64,
    output_type: Any = "auto",
    isa: Any = None,
    kernel: Any = None,
    exact_topk: Any = False,
) -> None:
    """Checks the type and range of each load option.

    Raises:
        ParameterError: An option of the wrong type or out of range, named.
    """
    _int("n_ctx", n_ctx, 0, MAX_N_CTX, " (0: the model's context length)")
    _int("n_batch", n_batch, 1, MAX_N_BATCH)
    if n_threads is not None:
        limit = max_threads()
        _int("n_threads", n_threads, 1, limit, f" (4 x the {os.cpu_count()} hardware threads)")
    _choice("kv_cache", kv_cache, tuple(KV_CACHE_TYPES))
    _int("n_parallel", n_parallel, 1, MAX_N_PARALLEL)
    if kv_budget is not None:
        _int("kv_budget", kv_budget, 1, 1 << 40)
    _int("max_queue", max_queue, 0, MAX_QUEUE)
    if not isinstance(exact_topk, bool):
        raise ParameterError("exact_topk", f"exact_topk must be True or False, got {exact_topk!r}")
    if exact_topk and output_type == "f32":
        raise ParameterError(
            "exact_topk",
            "exact_topk=True reads the q8_0 output layer; it needs output_type 'auto' or 'q8_0', "
            "got 'f32'",
        )
    if n_batch < n_parallel:
        raise ParameterError(
            "n_batch",
            f"n_batch ({n_batch}) must be at least n_parallel ({n_parallel}): every running "
            "sequence decodes one token per step",
        )
    _choice("output_type", output_type, OUTPUT_TYPES)
    if isa is not None and (not isinstance(isa, str) or not isa):
        raise ParameterError("isa", f"isa must be a non-empty str or None, got {isa!r}")
    _choice("kernel", kernel, KERNELS, optional=True)


def model_path(path: Any) -> str:
    """path (str, bytes or os.PathLike) as a str; ParameterError for anything else."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise ParameterError(
            "path", f"path must be a str or os.PathLike, got {type(path).__name__}"
        ) from None


def check_model_path(path: str) -> None:
    """Checks that path names a regular file, before anything opens it.

    Opening a FIFO blocks until a writer appears, so the type is checked first.

    Raises:
        FileNotFoundError: Nothing is at path.
        PermissionError: The path cannot be inspected.
        FormatError: path is a directory (a checkpoint to convert?), a FIFO or a device.
        ParameterError: path holds a NUL character.
    """
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except ValueError as e:  # embedded NUL
        raise ParameterError("path", f"path is not a valid file name ({e}): {path!r}") from None
    if stat.S_ISDIR(st.st_mode):
        hint = ""
        if (Path(path) / "config.json").is_file():
            hint = " (a Hugging Face checkpoint: convert it with `bitnet convert`)"
        raise FormatError(f"{path}: is a directory, not a GGUF file{hint}")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise FormatError(f"{path}: not a regular file ({kind}); a model must be a GGUF file")


def memory_limit() -> tuple[int, str]:
    """The most memory this process can use, in bytes, and where that limit comes from."""
    limits: list[tuple[int, str]] = []
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if pages > 0:
            limits.append((pages, "physical RAM"))
    except (ValueError, OSError):
        pass
    cgroup = _cgroup_limit()
    if cgroup is not None:
        limits.append((cgroup, "the cgroup's memory.max"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append((max(0, soft - _mapped_bytes()), "RLIMIT_AS (ulimit -v) less what is mapped"))
    return min(limits) if limits else (1 << 62, "no known limit")


def _cgroup_limit() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _mapped_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def session_bytes(
    config: Mapping[str, Any], *, n_ctx: int, n_batch: int, kv_cache: str, n_threads: int
) -> tuple[int, int]:
    """Bytes one session reserves: (KV cache, scratch), from the model's hyperparameters.

    The KV cache holds K and V of every layer for n_ctx positions; the scratch holds the
    activations of min(n_batch, n_ctx) tokens (csrc/model/model.h lists the buffers) and one
    row of attention scores per thread.
    """
    n_embd = int(config["n_embd"])
    q_dim = int(config["n_heads"]) * int(config["head_dim"])
    kv_dim = int(config["n_kv_heads"]) * int(config["head_dim"])
    widest = max(n_embd, q_dim, int(config["n_ff"]))
    kv = int(2 * int(config["n_layers"]) * n_ctx * kv_dim * KV_CACHE_TYPES[kv_cache])
    per_token = 4 * (n_embd + 6 * widest + 2 * q_dim + 3 * kv_dim + int(config["n_rot"]))
    per_token += 17 * widest + 2 * n_embd  # int8 activations, LUT tables, int8 output acts
    scratch = min(n_batch, n_ctx) * per_token + 4 * n_threads * (n_ctx + n_embd)
    return kv, scratch


def check_memory(
    config: Mapping[str, Any],
    *,
    path: str,
    n_ctx: int,
    n_batch: int,
    kv_cache: str,
    n_threads: int,
    n_parallel: int = 1,
    kv_budget: int | None = None,
) -> None:
    """Refuses KV caches whose reservation exceeds :func:`memory_limit`.

    A loaded model reserves the engine's cache (kv_budget positions; None: n_parallel x n_ctx)
    and one private session of n_ctx positions (``logits``, ``perplexity``), each with the
    scratch of one batch.

    Args:
        config: The model's hyperparameters (``_core.Model.config``).
        path: The model file, for the message.
        n_ctx: The option as passed (0: the model's context length, named as the file's key).
        n_batch: Tokens per forward pass.
        kv_cache: A key of :data:`KV_CACHE_TYPES`.
        n_threads: Threads per forward pass (resolved, >= 1).
        n_parallel: Sequences the engine runs at once.
        kv_budget: The engine's KV positions (None: n_parallel x n_ctx).

    Raises:
        ParameterError: The reservation does not fit; the message names the option (n_ctx,
            or kv_budget when given; the file's context-length key when n_ctx was 0), the
            bytes needed and the limit.
    """
    effective = n_ctx or int(config["n_ctx_train"])
    if effective > MAX_N_CTX:  # only the file's value can be out of range here
        raise ParameterError(
            "n_ctx",
            f"n_ctx=0 takes the model's context length, {effective} tokens "
            f"({config['arch']}.context_length in {path}), more than the {MAX_N_CTX} a context "
            "may hold; pass n_ctx",
        )
    limit, source = memory_limit()

    def need(ctx: int) -> tuple[int, int, int]:
        """(KV positions, KV bytes, scratch bytes) for a context of ctx."""
        positions = (kv_budget if kv_budget is not None else n_parallel * ctx) + ctx
        kv, scratch = session_bytes(
            config, n_ctx=ctx, n_batch=n_batch, kv_cache=kv_cache, n_threads=n_threads
        )
        return positions, kv * positions // ctx, 2 * scratch

    positions, kv, scratch = need(effective)
    if kv + scratch <= limit:
        return
    found = (
        f"n_ctx={n_ctx}"
        if n_ctx
        else f"n_ctx=0 takes the model's context length, {effective} tokens "
        f"({config['arch']}.context_length in {path})"
    )
    engine = f"kv_budget={kv_budget}" if kv_budget is not None else f"n_parallel={n_parallel}"
    largest = _largest_ctx(lambda ctx: sum(need(ctx)[1:]) <= limit)
    fix = (
        "pass a smaller kv_budget"
        if kv_budget is not None
        else f"pass a smaller n_ctx (at most about {largest} tokens fit) or n_parallel"
    )
    raise ParameterError(
        "kv_budget" if kv_budget is not None else "n_ctx",
        f"{found} with {engine}: KV caches ({kv_cache}) for {positions} positions (the "
        f"engine's and one session's) take {_gib(kv)} plus {_gib(scratch)} of scratch, more "
        f"than the {_gib(limit)} of {source}; {fix}",
    )


def _largest_ctx(fits: Callable[[int], bool]) -> int:
    """The largest n_ctx in [0, MAX_N_CTX] for which fits holds (fits is monotone)."""
    lo, hi = 0, MAX_N_CTX
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def check_token_ids(
    ids: Sequence[int] | npt.NDArray[Any], n_vocab: int, param: str, *, allow_empty: bool = False
) -> npt.NDArray[np.int32]:
    """ids as an int32 array, after checking each is an integer in [0, n_vocab).

    Floats are refused rather than truncated (1.7 is not token 1), bools rather than read as
    0/1; numpy integer arrays and scalars are accepted.

    Raises:
        ParameterError: Not a 1-D sequence of integers, empty (unless allowed), or an id out
            of range (the first one is named with its index).
    """
    if isinstance(ids, np.ndarray):
        if ids.dtype.kind not in "iu" or ids.ndim != 1:
            raise ParameterError(
                param,
                f"{param} must be a 1-D sequence of integer token ids, got an array of "
                f"{ids.dtype} with shape {ids.shape}",
            )
        arr = ids
    else:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise ParameterError(
                param, f"{param} must be a sequence of token ids, got {type(ids).__name__}"
            )
        for i, t in enumerate(ids):
            if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
                raise ParameterError(param, f"{param}[{i}] must be an integer token id, got {t!r}")
        try:
            arr = np.asarray([int(t) for t in ids], dtype=np.int64)
        except OverflowError:
            arr = np.asarray([int(t) for t in ids], dtype=object)
    if arr.size == 0:
        if allow_empty:
            return np.zeros(0, dtype=np.int32)
        raise ParameterError(param, f"{param} is empty; at least one token id is needed")
    bad = np.flatnonzero((arr < 0) | (arr >= n_vocab))
    if bad.size:
        i = int(bad[0])
        raise ParameterError(param, f"{param}[{i}] = {arr[i]} is not a token id in [0, {n_vocab})")
    return arr.astype(np.int32)
