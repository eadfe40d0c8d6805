"""Compares constrained-decoding libraries on bitnet's own tokenizers (never a test).

For each library installed (llguidance, xgrammar, outlines-core) and each tokenizer (the bundled
model's 3,072-token SentencePiece vocabulary, LLaMA-3's 128,256-token byte-level BPE rebuilt from
``llama-models``' file as tests/tokenizer_assets.py does), it measures:

* setup: building the library's tokenizer view from our token bytes (once per model);
* compile: turning a JSON schema into a matcher (once per request, or cached);
* mask: one allowed-token mask per step while walking a valid answer token by token
  (mean, p50, p90, max in microseconds), including the conversion to the bool array the
  engine's ``TokenConstraint.fill_mask`` fills.

The walk also checks that every token of the answer was allowed and that the matcher ends in an
accepting state. Usage::

    python bench/constraint_libs.py            # all installed libraries, both tokenizers
    python bench/constraint_libs.py --reps 5   # more repetitions of each walk
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bitnet import _core
from bitnet.api import default_model_path
from bitnet.tokenizer import Tokenizer, tokenizer_from_gguf

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city", "zip"],
        },
        "role": {"enum": ["admin", "user", "guest"]},
    },
    "required": ["name", "age", "email", "tags", "address", "role"],
}
ANSWER = (
    '{"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "tags": ["math", '
    '"poetry"], "address": {"city": "London", "zip": "W1"}, "role": "admin"}'
)


def tokenizers() -> list[tuple[str, Tokenizer]]:
    out = [
        ("bundled 3k SentencePiece", tokenizer_from_gguf(_core.GgufFile(str(default_model_path()))))
    ]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tokenizer_assets as assets

    model_file = assets.llama3_model_file()
    if model_file is None:
        print("llama-models is not installed: skipping the LLaMA-3 tokenizer", file=sys.stderr)
        return out
    path = Path(tempfile.mkdtemp()) / "llama3.gguf"
    assets.write_llama3_gguf(path, model_file)
    out.append(("LLaMA-3 128k BPE", tokenizer_from_gguf(_core.GgufFile(str(path)))))
    return out


def token_table(tok: Tokenizer) -> tuple[list[bytes], list[int]]:
    """Every token's bytes, and the ids of control tokens (which add no bytes)."""
    pieces = [tok.token_bytes(i) for i in range(tok.n_tokens)]
    special = [i for i, p in enumerate(pieces) if not p and tok.token_text(i)]
    return pieces, special


class Lib:
    name = ""

    def setup(self, tok: Tokenizer) -> None: ...
    def compile(self, schema: str) -> Any: ...
    def mask(self, matcher: Any, allowed: np.ndarray) -> None: ...
    def advance(self, matcher: Any, token: int) -> None: ...
    def accepting(self, matcher: Any) -> bool: ...


class Llguidance(Lib):
    """Through bitnet.engine.constraint, exactly as the engine uses it."""

    name = "llguidance"

    def setup(self, tok: Tokenizer) -> None:
        from bitnet.engine.constraint import JsonVocabulary

        self.vocab = JsonVocabulary(tok, tok.n_tokens)

    def compile(self, schema: str) -> Any:
        return self.vocab.constraint(schema)

    def mask(self, matcher: Any, allowed: np.ndarray) -> None:
        matcher.fill_mask(allowed)

    def advance(self, matcher: Any, token: int) -> None:
        matcher.accept(token)

    def accepting(self, matcher: Any) -> bool:
        return bool(matcher.is_accepting())


def unpack(words: np.ndarray, allowed: np.ndarray) -> None:
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")
    allowed[:] = bits[: allowed.shape[0]]


class Xgrammar(Lib):
    name = "xgrammar"

    def setup(self, tok: Tokenizer) -> None:
        import torch
        import xgrammar

        pieces = [tok.token_bytes(i) for i in range(tok.n_tokens)]
        info = xgrammar.TokenizerInfo(
            pieces, xgrammar.VocabType.RAW, vocab_size=len(pieces), stop_token_ids=list(tok.eos_ids)
        )
        self.xgr = xgrammar
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.words = torch.zeros((1, (len(pieces) + 31) // 32), dtype=torch.int32)
        self.eos = tok.eos_ids

    def compile(self, schema: str) -> Any:
        compiled = self.compiler.compile_json_schema(schema, any_whitespace=False)
        return self.xgr.GrammarMatcher(compiled)

    def mask(self, matcher: Any, allowed: np.ndarray) -> None:
        matcher.fill_next_token_bitmask(self.words)
        unpack(self.words.numpy()[0], allowed)

    def advance(self, matcher: Any, token: int) -> None:
        assert matcher.accept_token(token)

    def accepting(self, matcher: Any) -> bool:
        allowed = np.zeros(self.words.shape[1] * 32, dtype=bool)
        self.mask(matcher, allowed)  # accepting: a stop token may come next
        return bool(allowed[list(self.eos)].any())


class OutlinesCore(Lib):
    name = "outlines-core"

    def setup(self, tok: Tokenizer) -> None:
        import outlines_core

        by_bytes: dict[bytes, list[int]] = {}
        for i in range(tok.n_tokens):
            p = tok.token_bytes(i)
            if p and i not in tok.eos_ids:
                by_bytes.setdefault(p, []).append(i)
        self.oc = outlines_core
        self.vocab = outlines_core.Vocabulary(tok.eos_ids[0], by_bytes)
        self.words = np.zeros((tok.n_tokens + 31) // 32, dtype=np.int32)

    def compile(self, schema: str) -> Any:
        from outlines_core.json_schema import build_regex_from_schema

        regex = build_regex_from_schema(schema, whitespace_pattern=r"[ ]?")
        return self.oc.Guide(self.oc.Index(regex, self.vocab))

    def mask(self, matcher: Any, allowed: np.ndarray) -> None:
        matcher.write_mask_into(self.words.ctypes.data, self.words.size, 4)
        unpack(self.words, allowed)

    def advance(self, matcher: Any, token: int) -> None:
        matcher.advance(token, return_tokens=False)

    def accepting(self, matcher: Any) -> bool:
        return bool(matcher.is_finished())


def walk(lib: Lib, matcher: Any, tok: Tokenizer, pieces: list[bytes]) -> tuple[list[float], int]:
    """Generates ANSWER through the matcher: each step takes the allowed token with the
    longest bytes that continue ANSWER (as a model that wants ANSWER would). Returns the mask
    times and the number of tokens."""
    rest = ANSWER.encode()
    allowed = np.zeros(len(pieces), dtype=bool)
    times = []
    while rest:
        t0 = time.perf_counter()
        lib.mask(matcher, allowed)
        times.append(time.perf_counter() - t0)
        best, best_len = -1, 0
        for t in np.flatnonzero(allowed):
            p = pieces[t]
            if len(p) > best_len and rest.startswith(p):
                best, best_len = int(t), len(p)
        assert best >= 0, f"{lib.name}: nothing allowed continues {rest[:20]!r}"
        lib.advance(matcher, best)
        rest = rest[best_len:]
    assert lib.accepting(matcher), f"{lib.name}: the answer is complete but not accepted"
    return times, len(times)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="walks per library and tokenizer")
    args = parser.parse_args()
    schema = json.dumps(SCHEMA)
    json.loads(ANSWER)
    libs: list[Lib] = []
    for cls in (Llguidance, Xgrammar, OutlinesCore):
        try:
            __import__(
                {"llguidance": "llguidance", "xgrammar": "xgrammar"}.get(cls.name, "outlines_core")
            )
        except ImportError as e:
            print(f"{cls.name}: not installed ({e})", file=sys.stderr)
            continue
        libs.append(cls())
    print(
        "| tokenizer | library | setup s | compile ms | mask µs mean | p50 | p90 | max | tokens |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for tname, tok in tokenizers():
        pieces = [tok.token_bytes(i) for i in range(tok.n_tokens)]
        for lib in libs:
            _, setup_s = timed(lambda lib=lib, tok=tok: lib.setup(tok))
            compiles, masks = [], []
            for _ in range(args.reps):
                matcher, c = timed(lambda lib=lib: lib.compile(schema))
                compiles.append(c)
                times, n_tokens = walk(lib, matcher, tok, pieces)
                masks.extend(times)
            us = sorted(m * 1e6 for m in masks)
            print(
                f"| {tname} | {lib.name} | {setup_s:.2f} | {statistics.median(compiles) * 1e3:.1f} "
                f"| {statistics.fmean(us):.0f} | {us[len(us) // 2]:.0f} | {us[int(len(us) * 0.9)]:.0f} "
                f"| {us[-1]:.0f} | {n_tokens} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
