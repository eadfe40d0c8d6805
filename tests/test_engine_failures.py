"""Engine robustness: an exception while handling one request on the engine thread (its
constraint, its sampler, its draw, its text) fails that request alone and frees its slot, while the
others finish with the tokens they give alone; and a request that ends on a full context never
holds more than n_ctx tokens (prompt + generated)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bitnet
from bitnet.errors import BitnetError

MODEL = Path(__file__).resolve().parent.parent / "models" / "bitnet-kjv-5m-tq2_0.gguf"
OTHERS: list[tuple[str, dict]] = [
    ("And God said", {"temperature": 0, "max_tokens": 30}),
    ("Blessed are", {"top_k": 20, "seed": 3, "max_tokens": 40}),
    ("In the beginning", {"temperature": 0.9, "top_k": 0, "seed": 5, "max_tokens": 25}),
]


class Faulty:
    """A TokenConstraint that raises in `where` ("fill_mask", "accept", "is_finished") at its
    `at`-th call, or that allows nothing (where == "empty")."""

    def __init__(self, where: str, at: int = 3) -> None:
        self.where = where
        self.at = at
        self.calls = 0

    def _maybe_raise(self, name: str) -> None:
        if name == self.where:
            self.calls += 1
            if self.calls >= self.at:
                raise ValueError(f"broken {name}")

    def fill_mask(self, allowed: np.ndarray) -> None:
        self._maybe_raise("fill_mask")
        if self.where != "empty":
            allowed[:] = True

    def accept(self, token_id: int) -> None:
        self._maybe_raise("accept")

    def is_finished(self) -> bool:
        self._maybe_raise("is_finished")
        return False


def _alone(prompt: str, opts: dict, exact_topk: bool) -> tuple[int, ...]:
    with bitnet.load(MODEL, n_threads=1, n_parallel=1, exact_topk=exact_topk) as m:
        return m.complete(prompt, **opts).token_ids


def _use_constraint(monkeypatch: pytest.MonkeyPatch, constraint: Any) -> None:
    fake = types.ModuleType("bitnet.engine.constraint")
    fake.make_constraint = lambda model, schema: constraint  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bitnet.engine.constraint", fake)


@pytest.mark.parametrize("exact_topk", [False, True])
@pytest.mark.parametrize("where", ["fill_mask", "accept", "is_finished", "empty"])
def test_a_failing_constraint_fails_only_its_request(
    monkeypatch: pytest.MonkeyPatch, where: str, exact_topk: bool
) -> None:
    want = [_alone(p, o, exact_topk) for p, o in OTHERS]
    _use_constraint(monkeypatch, Faulty(where))
    with bitnet.load(MODEL, n_threads=1, n_parallel=4, exact_topk=exact_topk) as m:
        handles = [m.submit(p, **o) for p, o in OTHERS[:2]]
        bad = m.submit("And", max_tokens=50, temperature=0, json_schema={"type": "object"})
        handles.append(m.submit(*OTHERS[2][0:1], **OTHERS[2][1]))
        message = "every logit is NaN, -inf or masked" if where == "empty" else f"broken {where}"
        with pytest.raises(BitnetError, match=f"{bad.request_id} failed.*{message}"):
            bad.result(timeout=60)
        with pytest.raises(BitnetError):  # the stream raises too
            list(bad)
        assert [h.result(timeout=60).token_ids for h in handles] == want
        s = m.engine.stats()
        assert s.alive and s.requests_failed_total == 1
        assert s.running == 0 and s.waiting == 0 and s.kv_tokens_used == 0
        # The engine goes on serving.
        assert m.complete(*OTHERS[0][0:1], **OTHERS[0][1]).token_ids == want[0]


def test_a_failing_sampler_or_text_fails_only_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    want = [_alone(p, o, False) for p, o in OTHERS]
    with bitnet.load(MODEL, n_threads=1, n_parallel=4) as m:
        engine = m.engine
        make = engine._make_sampler

        def make_sampler(p: Any, seed: int, prompt: list[int]) -> Any:
            if seed == 666:
                raise MemoryError("no room for a sampler")
            return make(p, seed, prompt)

        monkeypatch.setattr(engine, "_make_sampler", make_sampler)
        bad = m.submit("And", seed=666, max_tokens=10)
        handles = [m.submit(p, **o) for p, o in OTHERS]
        with pytest.raises(BitnetError, match="MemoryError: no room for a sampler"):
            bad.result(timeout=60)
        assert [h.result(timeout=60).token_ids for h in handles] == want

        # A text stream (stop-string scanner) that breaks after a few tokens, mid-generation.
        from bitnet.engine import engine as engine_module

        class BrokenText(engine_module.TextStream):
            calls = 0

            def push(self, data: bytes) -> str:
                if "zzz" in self._stop:
                    BrokenText.calls += 1
                    if BrokenText.calls == 5:
                        raise UnicodeError("bad bytes")
                return super().push(data)

        monkeypatch.setattr(engine_module, "TextStream", BrokenText)
        h = m.submit("And", max_tokens=40, temperature=0, stop=["zzz"])
        others = [m.submit(p, **o) for p, o in OTHERS]
        with pytest.raises(BitnetError, match="UnicodeError: bad bytes"):
            h.result(timeout=60)
        assert [o.result(timeout=60).token_ids for o in others] == want
        s = engine.stats()
        assert s.alive and s.requests_failed_total == 2 and s.kv_tokens_used == 0


@pytest.mark.parametrize("exact_topk", [False, True])
def test_context_full_never_exceeds_n_ctx(exact_topk: bool) -> None:
    n_ctx = 40
    with bitnet.load(MODEL, n_ctx=n_ctx, n_threads=1, n_parallel=4, exact_topk=exact_topk) as m:
        ids = m.tokenize("In the beginning God created the heaven and the earth. " * 8)
        assert len(ids) > n_ctx
        for n_prompt in (1, 2, 20, 31, 32, 33, 38, 39, 40):
            for opts in ({"temperature": 0}, {"top_k": 0, "seed": 2}, {"logprobs": True}):
                c = m.complete(ids[:n_prompt], max_tokens=1000, ignore_eos=True, **opts)
                assert c.finish_reason == "context", (n_prompt, opts)
                assert c.prompt_tokens + c.completion_tokens == n_ctx, (n_prompt, opts)
        # Batched, with chunked prompts: the same accounting.
        hs = [m.submit(ids[:n], max_tokens=1000, ignore_eos=True, seed=n) for n in (5, 17, 39, 40)]
        for h in hs:
            c = h.result(timeout=60)
            assert c.finish_reason == "context" and c.prompt_tokens + c.completion_tokens == n_ctx
        # max_tokens that ends exactly at the context is "length".
        c = m.complete(ids[:30], max_tokens=10, temperature=0, ignore_eos=True)
        assert c.finish_reason == "length" and c.completion_tokens == 10
        # A prompt of n_ctx tokens with max_tokens 0 is processed (prefix cache) and ends "length".
        assert m.complete(ids[:n_ctx], max_tokens=0).finish_reason == "length"
        s = m.engine.stats()
        assert s.kv_tokens_used == 0 and s.requests_failed_total == 0
