"""End-to-end speed of a model, measured like llama.cpp's llama-bench (``bitnet bench``).

For each thread count and each context depth D (``-d``, default 0), two tests, each repeated
``reps`` times after one warm-up run:

* ``pp<P>``: one forward pass over a prompt of P random token ids (logits of the last token
  only), reported as P / time in tokens/s;
* ``tg<N>``: N tokens generated one at a time, each fed with the argmax of the previous logits
  (no sampling work beyond that), reported as N / time.

At a depth D > 0 (``pp<P> @ d<D>``, ``tg<N> @ d<D>``, as ``llama-bench -d``) the cache first holds
D random tokens (not timed) and each repetition starts again from them: the speed of a prompt or
of generation after a long context.

With ``--parallel B1,B2,..`` the tests are those of llama.cpp's ``llama-batched-bench`` instead:
B sequences, each with its own prompt of P random tokens processed together (``pp<P> x<B>``,
B*P / time), then N tokens generated for each of them, all B advanced in every step of the
batched decoder (``tg<N> x<B>``, B*N / time: the aggregate; ``per_seq_tokens_per_s`` = N / time,
the speed one user sees).

With ``exact_topk=K`` (``--exact-topk [K]``) the model is loaded with the exact-top-k pre-pass and
every tg step asks for only the K largest logits (K = 1 by default: the argmax the test takes);
those results also give the fraction of output rows recomputed exactly and count the bytes read
per token as the pre-pass plus those rows (instead of the full q8_0 output layer).

Figures are the median over repetitions with the standard deviation and the min-max range. Each
result records the commit, CPU, kernel ISA, threads, model size (bytes and parameters) and, for
tg, the bytes of weights read per token with the bandwidth that implies (bytes x tokens/s), so
it can be set against the machine's measured read bandwidth (``--membw``, or
``bench/kernel_bench --membw-only``).

Timing uses the extension's Session (single sequence) and BatchDecoder (``--parallel``) directly:
the forward pass releases the GIL and takes the whole batch in one call, so Python adds only a
function call per step. Benchmarks report; they never assert a speed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _core

__all__ = [
    "BenchResult",
    "add_parser",
    "measure_read_bandwidth",
    "params_text",
    "run",
    "run_bench",
    "to_json",
    "to_markdown",
]


@dataclass
class BenchResult:
    """One test (pp or tg) at one thread count."""

    test: str  # "pp128" or "tg64"
    n_prompt: int
    n_gen: int
    threads: int
    threads_applied: bool  # False when this build has no n_threads option (ran its default)
    reps: int
    samples_s: list[float]  # wall time of each repetition
    tokens_per_s: float  # median
    stdev: float  # of tokens/s over repetitions (0 for one)
    min_tokens_per_s: float
    max_tokens_per_s: float
    gb_per_s: float | None = None  # tg: bytes read per token x tokens/s / 1e9
    pct_of_read_bw: float | None = None  # tg: gb_per_s / measured read bandwidth
    n_depth: int = 0  # tokens already in the cache when the test starts
    n_parallel: int = 1  # sequences processed together (--parallel)
    per_seq_tokens_per_s: float | None = None  # --parallel: median tokens/s of one sequence
    kv_cache: str = "f16"  # KV cache type
    topk: int = 0  # tg with the exact-top-k output layer: logits wanted per step (0: full layer)
    exact_rows_fraction: float | None = None  # topk: output rows recomputed / rows, mean
    bytes_read_per_token: int | None = None  # topk: pre-pass + recomputed rows (else the report's)


@dataclass
class BenchReport:
    """Everything ``bitnet bench`` prints: the machine, the model and the results."""

    date: str
    commit: str
    cpu: str
    isa: str
    cpu_info: Any
    hardware_threads: int
    model_path: str
    model_name: str
    model_size_bytes: int
    model_params: int
    weight_types: str
    kernels: Any
    bytes_read_per_token: int
    bytes_read_note: str
    exact_topk: int = 0  # K of --exact-topk (0: off)
    topk_pass_bytes: int = 0  # bytes of the pre-pass per token
    output_bytes: int = 0  # bytes of the full q8_0 output layer per token
    n_vocab: int = 0
    read_bandwidth_gbps: dict[int, float] = field(default_factory=dict)
    results: list[BenchResult] = field(default_factory=list)


def _commit() -> str:
    """`git describe` of the checkout this package runs from, else the package version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from . import __version__

    return f"bitnet {__version__}"


def _cpu_brand() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_info() -> tuple[Any, str]:
    """(bitnet.cpu_info() where this build has it, else None; the active kernel ISA)."""
    import bitnet

    fn = getattr(bitnet, "cpu_info", None)
    info: Any = None
    if callable(fn):
        try:
            info = fn()
        except (RuntimeError, OSError, ValueError, TypeError, AttributeError):
            # a diagnostics call must not stop a benchmark
            info = None
    isa = None
    if isinstance(info, dict):
        isa = info.get("isa") or info.get("kernel_isa")
    else:
        isa = getattr(info, "isa", None)
    return info, str(isa) if isa else _core.kernel_isa()


def _model_stats(core: Any) -> tuple[int, str, int, str]:
    """(parameters, weight types, bytes of weights read per token, how that was obtained)."""
    f = core.file
    tensors = {t["name"]: t for t in f.tensors()}
    params = 0
    for t in tensors.values():
        n = 1
        for d in t["shape"]:
            n *= int(d)
        params += n
    exact = getattr(core, "bytes_per_token", None)
    types = sorted({str(info["source_type"]) for info in core.linear_info()})
    out_name = "output.weight" if "output.weight" in tensors else "token_embd.weight"
    out = tensors.get(out_name)
    types_text = "/".join(types) + (f", output {out['type_name']}" if out else "")
    if getattr(core, "output_type", None):
        types_text += f" run as {core.output_type}"
    if isinstance(exact, int) and exact > 0:
        return params, types_text, exact, "reported by the engine"
    # BitLinear weights as the engine holds them after repacking: rows padded to 128 weights,
    # 2 bits per ternary weight, 1 bit per binary weight; the output layer as stored in the file.
    read = 0
    for info in core.linear_info():
        k_pad = (int(info["n_in"]) + 127) // 128 * 128
        bits = 1 if info["binary"] else 2
        read += int(info["n_out"]) * k_pad * bits // 8
    if out is not None:
        read += int(out["size_bytes"])
    note = (
        "estimate: BitLinear weights at 2 bits (binary 1) per padded weight + the output layer "
        "as stored in the file"
    )
    return params, types_text, read, note


def _kernels(model: Any) -> Any:
    """Model.kernels (the ISA and the kernel family of each BitLinear weight), where it exists."""
    try:
        return getattr(model, "kernels", None)
    except (AttributeError, RuntimeError, KeyError):
        return None


def measure_read_bandwidth(threads: int, *, size_mb: int = 512, reps: int = 5) -> float:
    """Memory read bandwidth in GB/s: numpy sums of a large buffer, one slice per thread.

    numpy releases the GIL inside the sum, so `threads` Python threads read in parallel. This is
    a floor on what the C probe (``kernel_bench --membw-only``) measures, usually within 10%.
    """
    n = (size_mb << 20) // 8
    buf = np.arange(n, dtype=np.uint64)
    parts = np.array_split(buf, threads)
    best: list[float] = []
    sink = [0] * threads

    def work(i: int) -> None:
        sink[i] = int(parts[i].sum())

    for rep in range(reps + 1):
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        dt = time.perf_counter() - t0
        if rep:  # the first pass warms up
            best.append(buf.nbytes / dt / 1e9)
    return float(statistics.median(best))


def _topk_result(
    report: BenchReport, r: BenchResult, before: Any, after: Any, k: int, n_seq: int = 1
) -> None:
    """Fills a tg result's top-k figures from the decoder's counters around its runs: the mean
    fraction of output rows recomputed exactly, and the bytes of weights one step reads (the
    rest of the weights and the pre-pass once, the recomputed q8_0 rows once per sequence)."""
    rows, exact = after[0] - before[0], after[1] - before[1]
    frac = exact / (rows * report.n_vocab) if rows else 0.0
    body = report.bytes_read_per_token - report.output_bytes
    r.topk = k
    r.exact_rows_fraction = frac
    r.bytes_read_per_token = int(body + report.topk_pass_bytes + n_seq * frac * report.output_bytes)


def _open_model(path: str, n_threads: int, n_batch: int, options: dict[str, Any]) -> Any:
    """The model through bitnet.Model (for its statistics); sessions are made per test."""
    from .model import Model

    return Model(path, n_ctx=0, n_batch=n_batch, n_threads=n_threads, n_parallel=1, **options)


def _summary(
    test: str,
    n_prompt: int,
    n_gen: int,
    threads: int,
    applied: bool,
    n_tokens: int,
    samples: Sequence[float],
) -> BenchResult:
    rates = [n_tokens / s for s in samples]
    return BenchResult(
        test=test,
        n_prompt=n_prompt,
        n_gen=n_gen,
        threads=threads,
        threads_applied=applied,
        reps=len(samples),
        samples_s=[float(s) for s in samples],
        tokens_per_s=float(statistics.median(rates)),
        stdev=float(statistics.stdev(rates)) if len(rates) > 1 else 0.0,
        min_tokens_per_s=float(min(rates)),
        max_tokens_per_s=float(max(rates)),
    )


def run_bench(
    path: str | os.PathLike[str],
    *,
    n_prompt: int = 128,
    n_gen: int = 64,
    threads: Sequence[int] = (1,),
    reps: int = 3,
    seed: int = 0,
    membw: float | str | None = None,
    isa: str | None = None,
    kernel: str | None = None,
    output_type: str | None = None,
    depths: Sequence[int] = (0,),
    parallel: Sequence[int] = (),
    kv_cache: str = "f16",
    n_batch: int = 2048,
    exact_topk: int = 0,
    progress: Any = None,
) -> BenchReport:
    """Measures pp and tg of the model at each thread count (see the module docstring).

    Args:
        path: A GGUF model file.
        n_prompt: Prompt length of the pp test (0 skips it).
        n_gen: Tokens of the tg test (0 skips it).
        threads: Thread counts, each measured in turn.
        reps: Repetitions of each test (after one warm-up).
        seed: Seed of the random prompt tokens.
        membw: Read bandwidth to compare tg against: None (skip), "auto" (measure now, per
            thread count, with :func:`measure_read_bandwidth`) or a number in GB/s.
        isa: Kernel ISA to force (``bitnet.load``'s isa=), None for the best.
        kernel: Ternary kernel family to force, ``"mad"``, ``"lut"`` or ``"t3"``; None for the default.
        output_type: Output layer (``"auto"``, ``"q8_0"``, ``"f32"``); None for the default.
        depths: Context depths: tokens in the cache before each pp/tg test (``-d``).
        parallel: Sequence counts for batched tests (``--parallel``); when given, these run
            instead of the single-sequence pp/tg tests.
        kv_cache: KV cache type: "f16", "q8_0" or "f32".
        n_batch: Most tokens per forward pass of a batched prompt test (prompts are split into
            steps of at most this many tokens, all sequences' chunks together).
        exact_topk: K > 0: load the model with the exact-top-k pre-pass and ask for only the K
            largest logits in every tg step (module docstring); 0: the full output layer.
        progress: Optional callable taking one line of progress text.

    Returns:
        A BenchReport (to_json / to_markdown format it).
    """
    if n_prompt < 0 or n_gen < 0 or (n_prompt == 0 and n_gen == 0):
        raise ValueError("need -p > 0 or -n > 0 (and neither negative)")
    if reps < 1:
        raise ValueError("repetitions must be at least 1")
    if not threads or any(t < 1 for t in threads):
        raise ValueError("thread counts must be positive integers")
    if not depths or any(d < 0 for d in depths):
        raise ValueError("-d/--depth values must be integers >= 0")
    if any(b < 1 for b in parallel):
        raise ValueError("--parallel values must be positive integers")
    if parallel and any(depths):
        raise ValueError("--parallel runs at depth 0 only (like llama-batched-bench)")
    if n_batch < 1:
        raise ValueError("--batch must be at least 1")
    if isinstance(exact_topk, bool) or not isinstance(exact_topk, int) or exact_topk < 0:
        raise ValueError(f"--exact-topk must be an integer >= 0, got {exact_topk!r}")
    p = os.fspath(path)
    if not Path(p).is_file():
        raise FileNotFoundError(f"{p}: no such file")
    note = progress if callable(progress) else (lambda _line: None)
    info, info_isa = _cpu_info()
    options: dict[str, Any] = {
        k: v
        for k, v in (("isa", isa), ("kernel", kernel), ("output_type", output_type))
        if v is not None
    }
    options["kv_cache"] = kv_cache
    if exact_topk:
        options["exact_topk"] = True
    report: BenchReport | None = None
    for t in threads:
        model = _open_model(p, t, max(n_prompt, 1), options)
        try:
            core = model._core
            if report is None:
                report = _new_report(p, model, info, info_isa)
                report.exact_topk = exact_topk
            if parallel:
                for b in parallel:
                    _batched_tests(
                        report, core, t, b, n_prompt, n_gen, reps, seed, kv_cache, n_batch, note
                    )
            else:
                for d in depths:
                    _session_tests(report, core, t, d, n_prompt, n_gen, reps, seed, kv_cache, note)
        finally:
            model.close()
    assert report is not None
    if membw is not None:
        for t in threads:
            bw = measure_read_bandwidth(t) if isinstance(membw, str) else float(membw)
            report.read_bandwidth_gbps[t] = bw
        for r in report.results:
            measured = report.read_bandwidth_gbps.get(r.threads)
            if r.gb_per_s is not None and measured:
                r.pct_of_read_bw = 100.0 * r.gb_per_s / measured
    return report


def _new_report(path: str, model: Any, info: Any, info_isa: str) -> BenchReport:
    core = model._core
    params, types, read, read_note = _model_stats(core)
    name = core.file.get("general.name") or Path(path).stem
    topk_info = _core.output_topk_info(core) if core.output_type == "q8_0" else {}
    return BenchReport(
        topk_pass_bytes=int(topk_info.get("pass_bytes", 0)),
        output_bytes=int(topk_info.get("q8_bytes", 0)),
        n_vocab=int(core.config["n_vocab"]),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        commit=_commit(),
        cpu=str(info.get("brand") or _cpu_brand()) if isinstance(info, dict) else _cpu_brand(),
        isa=str(getattr(core, "kernel_isa", info_isa)),
        cpu_info=info,
        hardware_threads=os.cpu_count() or 1,
        model_path=path,
        model_name=str(name),
        model_size_bytes=Path(path).stat().st_size,
        model_params=params,
        weight_types=types,
        kernels=_kernels(model),
        bytes_read_per_token=read,
        bytes_read_note=read_note,
    )


def _session_tests(
    report: BenchReport,
    core: Any,
    t: int,
    depth: int,
    n_prompt: int,
    n_gen: int,
    reps: int,
    seed: int,
    kv_cache: str,
    note: Any,
) -> None:
    """pp and tg of one sequence after `depth` tokens of context (llama-bench, -d)."""
    n_vocab = int(core.config["n_vocab"])
    rng = np.random.default_rng(seed)
    n_ctx = depth + max(n_prompt, n_gen) + 8
    n_batch = max(n_prompt, min(depth, 512), 1)  # the context is filled in big passes
    session = _core.Session(core, n_ctx, n_batch, t, kv_type=kv_cache)
    applied = int(session.n_threads) == t
    suffix = f" @ d{depth}" if depth else ""
    if depth:
        session.decode(rng.integers(0, n_vocab, size=depth, dtype=np.int32), False)
    if n_prompt:
        prompt = rng.integers(0, n_vocab, size=n_prompt, dtype=np.int32)
        samples = []
        for rep in range(reps + 1):
            session.truncate(depth)
            t0 = time.perf_counter()
            session.decode(prompt, False)
            dt = time.perf_counter() - t0
            if rep:
                samples.append(dt)
        r = _summary(f"pp{n_prompt}{suffix}", n_prompt, 0, t, applied, n_prompt, samples)
        r.n_depth, r.kv_cache = depth, kv_cache
        report.results.append(r)
        note(f"{r.test} t={t}: {r.tokens_per_s:.2f} tokens/s")
    if n_gen:
        first = int(rng.integers(0, n_vocab))
        k = report.exact_topk
        samples = []
        counts = session.topk_counts
        for rep in range(reps + 1):
            session.truncate(depth)
            tok = np.array([first], dtype=np.int32)
            if rep == 1:
                counts = session.topk_counts  # the warm-up run is not counted
            t0 = time.perf_counter()
            for _ in range(n_gen):
                logits = session.decode(tok, False, topk=k)
                tok[0] = int(np.argmax(logits))
            dt = time.perf_counter() - t0
            if rep:
                samples.append(dt)
        r = _summary(f"tg{n_gen}{suffix}", 0, n_gen, t, applied, n_gen, samples)
        r.n_depth, r.kv_cache = depth, kv_cache
        if k:
            _topk_result(report, r, counts, session.topk_counts, k)
        read = r.bytes_read_per_token or report.bytes_read_per_token
        r.gb_per_s = read * r.tokens_per_s / 1e9
        report.results.append(r)
        note(f"{r.test} t={t}: {r.tokens_per_s:.2f} tokens/s")


def _batched_tests(
    report: BenchReport,
    core: Any,
    t: int,
    n_seq: int,
    n_prompt: int,
    n_gen: int,
    reps: int,
    seed: int,
    kv_cache: str,
    n_batch: int,
    note: Any,
) -> None:
    """llama-batched-bench's test on the BatchDecoder: n_seq prompts of n_prompt tokens
    processed together, then n_gen tokens for each, every step advancing all n_seq."""
    n_vocab = int(core.config["n_vocab"])
    rng = np.random.default_rng(seed)
    bt = 32
    per_seq = -(-(n_prompt + n_gen + 1) // bt)
    cache = _core.KvCache(core, n_blocks=n_seq * per_seq, kv_type=kv_cache, block_tokens=bt)
    step_batch = max(n_seq, min(n_batch, n_seq * max(n_prompt, 1)))
    dec = _core.BatchDecoder(core, cache, n_batch=step_batch, n_threads=t)
    applied = int(dec.n_threads) == t
    tables = [np.arange(i * per_seq, (i + 1) * per_seq, dtype=np.int32) for i in range(n_seq)]
    prompts = rng.integers(0, n_vocab, size=(n_seq, max(n_prompt, 1)), dtype=np.int32)
    label = f" x{n_seq}"

    def prefill() -> None:
        # Every sequence's prompt, in steps of at most step_batch tokens: each step takes an
        # equal slice of every prompt, so all sequences advance together.
        chunk = max(1, step_batch // n_seq)
        for start in range(0, n_prompt, chunk):
            n = min(chunk, n_prompt - start)
            last = 1 if start + n == n_prompt else 0
            dec.step(
                [(tables[i], start, prompts[i, start : start + n], last) for i in range(n_seq)]
            )

    if n_prompt:
        samples = []
        for rep in range(reps + 1):
            t0 = time.perf_counter()
            prefill()
            dt = time.perf_counter() - t0
            if rep:
                samples.append(dt)
        total = n_seq * n_prompt
        r = _summary(f"pp{n_prompt}{label}", n_prompt, 0, t, applied, total, samples)
        r.n_parallel, r.kv_cache = n_seq, kv_cache
        r.per_seq_tokens_per_s = r.tokens_per_s / n_seq
        report.results.append(r)
        note(f"{r.test} t={t}: {r.tokens_per_s:.2f} tokens/s")
    if n_gen:
        samples = []
        k = report.exact_topk
        counts = dec.topk_counts
        for rep in range(reps + 1):
            if n_prompt:
                prefill()  # not timed: generation starts after the prompts
            tok = prompts[:, :1].copy() if not n_prompt else prompts[:, -1:].copy()
            n_past = n_prompt
            if rep == 1:
                counts = dec.topk_counts  # the warm-up run is not counted
            t0 = time.perf_counter()
            for _ in range(n_gen):
                logits = dec.step([(tables[i], n_past, tok[i], 1, k or None) for i in range(n_seq)])
                tok[:, 0] = np.argmax(logits, axis=1)
                n_past += 1
            dt = time.perf_counter() - t0
            if rep:
                samples.append(dt)
        r = _summary(f"tg{n_gen}{label}", 0, n_gen, t, applied, n_seq * n_gen, samples)
        r.n_parallel, r.kv_cache = n_seq, kv_cache
        r.per_seq_tokens_per_s = r.tokens_per_s / n_seq
        if k:
            _topk_result(report, r, counts, dec.topk_counts, k, n_seq)
        # One read of the weights per step, shared by the n_seq tokens of the step.
        read = r.bytes_read_per_token or report.bytes_read_per_token
        r.gb_per_s = read * r.per_seq_tokens_per_s / 1e9
        report.results.append(r)
        note(
            f"{r.test} t={t}: {r.tokens_per_s:.2f} tokens/s ({r.per_seq_tokens_per_s:.2f} per seq)"
        )


def to_json(report: BenchReport) -> str:
    """The report as JSON (one object: machine, model, results)."""
    d = asdict(report)
    d["read_bandwidth_gbps"] = {str(k): v for k, v in report.read_bandwidth_gbps.items()}
    return json.dumps(d, indent=2, default=str)


def _size_text(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def params_text(n: int) -> str:
    """A parameter count as llama-bench prints it: '2.41 B', '4.70 M', '850.00 K'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def to_markdown(report: BenchReport) -> str:
    """The report as a llama-bench style markdown table with a header of context lines."""
    lines = [
        f"bitnet bench, {report.date}, commit {report.commit}",
        f"CPU {report.cpu} ({report.hardware_threads} hardware threads), kernels {report.isa}",
        (
            f"model {report.model_path}: {report.model_name}, {report.weight_types}, "
            f"{_size_text(report.model_size_bytes)}, {params_text(report.model_params)} "
            f"parameters, {report.bytes_read_per_token / (1 << 20):.0f} MiB of weights read "
            f"per token ({report.bytes_read_note})"
        ),
    ]
    if isinstance(report.kernels, dict):
        fams = ", ".join(f"{k} x{v}" for k, v in dict(report.kernels.get("linear", {})).items())
        lines.append(f"BitLinear kernels: {fams}; output layer {report.kernels.get('output')}")
    if report.exact_topk:
        fracs = [r.exact_rows_fraction for r in report.results if r.exact_rows_fraction is not None]
        lines.append(
            f"output layer: exact top-{report.exact_topk} (pre-pass "
            f"{report.topk_pass_bytes / (1 << 20):.1f} MiB/token instead of "
            f"{report.output_bytes / (1 << 20):.1f} MiB, then the candidate rows exactly: "
            + ", ".join(f"{100 * f:.2f}%" for f in fracs)
            + " of the rows in the tg tests); tg GB/s counts those bytes"
        )
    if report.read_bandwidth_gbps:
        bw = ", ".join(f"{v:.1f} GB/s at {k} t" for k, v in report.read_bandwidth_gbps.items())
        lines.append(f"measured read bandwidth: {bw}")
    if any(not r.threads_applied for r in report.results):
        lines.append("note: this build has no thread option; every row ran its default threads")
    kv = ", ".join(sorted({r.kv_cache for r in report.results}))
    if kv:
        lines.append(f"KV cache: {kv}")
    batched = any(r.per_seq_tokens_per_s is not None for r in report.results)
    columns = ["model", "size", "params", "isa", "threads", "test", "t/s", "min-max"]
    columns += ["t/s per seq"] if batched else []
    columns += ["GB/s", "% of read BW"]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in report.results:
        gbps = f"{r.gb_per_s:.2f}" if r.gb_per_s is not None else ""
        pct = f"{r.pct_of_read_bw:.0f}%" if r.pct_of_read_bw is not None else ""
        per_seq = f"{r.per_seq_tokens_per_s:.2f}" if r.per_seq_tokens_per_s is not None else ""
        cells = [
            report.model_name,
            _size_text(report.model_size_bytes),
            params_text(report.model_params),
            report.isa,
            str(r.threads),
            r.test,
            f"{r.tokens_per_s:.2f} ± {r.stdev:.2f}",
            f"{r.min_tokens_per_s:.2f}-{r.max_tokens_per_s:.2f}",
        ]
        cells += [per_seq] if batched else []
        cells += [gbps, pct]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- the `bitnet bench` command (bitnet.cli registers it through add_parser/run) ---------------


def _int_list(what: str, low: int) -> Any:
    """An argparse type: comma-separated integers, each at least low."""
    import argparse

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {text!r}"
            ) from None
        if not values or any(v < low for v in values):
            raise argparse.ArgumentTypeError(f"{what} must be {low} or more, got {text!r}")
        return values

    return parse


def _membw(text: str) -> float | str:
    import argparse

    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a bandwidth in GB/s, got {text!r}")
    return value


def add_parser(sub: Any) -> Any:
    """Adds ``bitnet bench`` to the command line's subcommands."""
    from .cli._common import add_model_options, int_at_least

    b = sub.add_parser(
        "bench",
        help="measure prompt and generation speed, like llama-bench",
        description="Prompt processing (pp) and generation (tg) speed in tokens/s: median "
        "and spread over repetitions, per thread count (docs/benchmarks.md).",
    )
    add_model_options(b, runs=False)
    b.add_argument(
        "-p",
        "--n-prompt",
        type=int_at_least(0),
        default=128,
        metavar="N",
        help="prompt tokens of the pp test, 0 skips it (default 128)",
    )
    b.add_argument(
        "-n",
        "--n-gen",
        type=int_at_least(0),
        default=64,
        metavar="N",
        help="tokens of the tg test, 0 skips it (default 64)",
    )
    b.add_argument(
        "-t",
        "--threads",
        type=_int_list("thread counts", 1),
        default=None,
        metavar="N[,N...]",
        help="comma-separated thread counts (default: the physical cores)",
    )
    b.add_argument(
        "-r", "--reps", type=int_at_least(1), default=3, metavar="N", help="repetitions (default 3)"
    )
    b.add_argument(
        "-o", "--output", choices=["md", "json"], default="md", help="output format (default md)"
    )
    b.add_argument(
        "--membw",
        type=_membw,
        default=None,
        metavar="auto|GBPS",
        help="read bandwidth to compare tg with: 'auto' measures it, or a number in GB/s",
    )
    b.add_argument(
        "--isa",
        default=None,
        help="force a lower kernel ISA (ref, avx2, avx512, avx512vnni, avx512vbmi, neon, dotprod)",
    )
    b.add_argument(
        "--kernel",
        choices=["mad", "lut", "t3"],
        default=None,
        help="force a ternary kernel family (t3: 1.67 bits per weight, avx512vbmi)",
    )
    b.add_argument(
        "--output-type",
        choices=["auto", "q8_0", "f32"],
        default=None,
        help="output layer computation (default: the model's auto choice)",
    )
    b.add_argument(
        "-d",
        "--depth",
        type=_int_list("depths", 0),
        default=[0],
        metavar="N[,N...]",
        help="comma-separated context depths: tokens already in the cache before each test, "
        "like llama-bench -d (default 0)",
    )
    b.add_argument(
        "--parallel",
        type=_int_list("sequence counts", 1),
        default=None,
        metavar="B[,B...]",
        help="batched tests instead, like llama-batched-bench: B sequences with a prompt of -p "
        "tokens each, then -n tokens generated for each, all B in every step; aggregate and "
        "per-sequence tokens/s",
    )
    b.add_argument(
        "--kv-cache",
        choices=["f16", "q8_0", "f32"],
        default="f16",
        help="KV cache type (default f16)",
    )
    b.add_argument(
        "--exact-topk",
        type=int_at_least(1),
        nargs="?",
        const=1,
        default=0,
        metavar="K",
        help="load the exact-top-k output pre-pass and ask for only the K largest logits in "
        "each tg step (K default 1: the argmax); reports the rows recomputed and the bytes read",
    )
    b.add_argument("--seed", type=int, default=0, help="seed of the random prompt (default 0)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    b.set_defaults(func=run)
    return b


def run(args: Any) -> int:
    """Runs ``bitnet bench`` with parsed arguments; prints the report to stdout."""
    import sys

    from . import hub
    from .cli._common import ArgumentError, model_name

    if args.n_prompt == 0 and args.n_gen == 0:
        raise ArgumentError("-p/-n", "-p and -n are both 0: nothing to measure")
    name = model_name(args)
    if hub.is_hub_name(name):
        name = os.fspath(hub.resolve(name, revision=args.revision, progress=not args.quiet))
    err = sys.stderr
    report = run_bench(
        name,
        n_prompt=args.n_prompt,
        n_gen=args.n_gen,
        threads=args.threads or [int(_core.cpu_info()["default_threads"])],
        reps=args.reps,
        seed=args.seed,
        membw=args.membw,
        isa=args.isa,
        kernel=args.kernel,
        output_type=args.output_type,
        depths=args.depth,
        parallel=args.parallel or (),
        kv_cache=args.kv_cache,
        exact_topk=args.exact_topk,
        progress=None if args.quiet else (lambda line: print(line, file=err, flush=True)),
    )
    sys.stdout.write(to_json(report) + "\n" if args.output == "json" else to_markdown(report))
    return 0
