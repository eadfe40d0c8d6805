"""The lm-evaluation-harness model backend ``bitnet`` (needs ``pip install 'bitnet[eval]'``).

Importing this module registers the backend with the harness under the name ``bitnet``; the
package also declares it as an ``lm_eval.models`` entry point, which harness releases that
discover plugins pick up by themselves. ``python -m bitnet.eval`` / ``bitnet eval`` run the
harness's own command line with the backend registered (docs/quality.md).

Request types:

* ``loglikelihood``: (context, continuation) pairs are tokenized as the harness's causal models
  do (the context with BOS when the model adds one, the continuation as the rest of the whole
  string's tokens) and scored by :func:`bitnet.eval.scoring.score_continuations`, which sorts the
  requests so that shared contexts (every choice of a question, every question of a few-shot
  prompt) are computed once and kept in the KV cache.
* ``loglikelihood_rolling``: the text's tokens, after BOS (EOS when the model has no BOS), in
  the harness's disjoint rolling windows of the model's context (``rolling_windows``).
* ``generate_until``: greedy (or sampled with ``do_sample``) generation that ends at any of the
  ``until`` strings (not included), at ``max_gen_toks``, at an end token or a full context;
  requests with the same options run together on the model's continuous-batching engine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lm_eval.models  # noqa: F401  (fills the registry first: see _register)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import model_registry
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from tqdm import tqdm

from ..errors import ParameterError
from ..model import Model, load
from .generate import GenerationRequest, generate_all
from .scoring import Score, rolling_windows, score_continuations

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

__all__ = ["BitnetLM"]

log = logging.getLogger(__name__)

_LOAD_OPTIONS = ("n_ctx", "n_batch", "n_threads", "kv_cache", "output_type", "isa", "kernel")
# Generation options of the harness's tasks that bitnet's sampler understands, by our name.
_SAMPLING_KEYS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repetition_penalty": "repeat_penalty",
    "repeat_penalty": "repeat_penalty",
    "seed": "seed",
}


class BitnetLM(TemplateLM):  # type: ignore[misc]  # lm_eval has no type information
    """A bitnet model as an lm-evaluation-harness ``LM``.

    Args:
        model: A .gguf path, hub repository or registry name (as :func:`bitnet.load`), or a
            loaded :class:`bitnet.Model`. ``pretrained`` is accepted as an alias.
        n_ctx: Context length (0: the model's); also the harness's ``max_length``.
        n_batch: See :func:`bitnet.load` for this and the next five options.
        n_threads: Threads per forward pass.
        kv_cache: KV-cache type.
        output_type: Output layer computation.
        isa: Kernel instruction set.
        kernel: Ternary kernel family.
        revision: Hub revision.
        add_bos: Start contexts with BOS (None: as the model does).
        max_gen_toks: Default most tokens per generation (tasks may override it).
        seed: Seed of sampled generations (greedy ones do not use it).
        batch_size: Accepted and ignored (scoring reuses prefixes instead of padding batches).
        max_batch_size: Accepted and ignored.
        device: Accepted and ignored: bitnet runs on the CPU (the harness passes "cuda:0" by
            default).

    Raises:
        ParameterError: An unknown option (names it and lists the known ones).
    """

    def __init__(
        self,
        model: str | Model | None = None,
        *,
        pretrained: str | None = None,
        n_ctx: int | None = None,
        n_batch: int | None = None,
        n_threads: int | None = None,
        kv_cache: str | None = None,
        output_type: str | None = None,
        isa: str | None = None,
        kernel: str | None = None,
        revision: str | None = None,
        add_bos: bool | None = None,
        max_gen_toks: int = 256,
        seed: int = 1234,
        batch_size: int | str | None = None,
        max_batch_size: int | None = None,
        device: str | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            known = ", ".join(("model", *_LOAD_OPTIONS, "revision", "add_bos", "max_gen_toks"))
            raise ParameterError(
                next(iter(unknown)),
                f"unknown bitnet model_args {sorted(unknown)}; known: {known}, seed",
            )
        source = model if model is not None else pretrained
        if source is None:
            raise ParameterError("model", "model_args needs model=FILE_OR_NAME")
        given = {
            k: v
            for k, v in {
                "n_ctx": n_ctx,
                "n_batch": n_batch,
                "n_threads": n_threads,
                "kv_cache": kv_cache,
                "output_type": output_type,
                "isa": isa,
                "kernel": kernel,
                "revision": revision,
            }.items()
            if v is not None
        }
        if isinstance(source, Model):
            if given:
                name = next(iter(given))
                raise ParameterError(
                    name, f"{name} is a load option; the model given is already loaded"
                )
            self.model = source
        else:
            ints = ("n_ctx", "n_batch", "n_threads")
            options: dict[str, Any] = {k: int(v) if k in ints else str(v) for k, v in given.items()}
            self.model = load(os.fspath(str(source)), progress=False, **options)
        tok = self.model.tokenizer
        self._add_bos = tok.add_bos if add_bos is None else bool(add_bos)
        self._max_gen_toks = int(max_gen_toks)
        self._seed = int(seed)
        self.tokenizer = tok

    # -- what the harness asks about the model ----------------------------------------------
    @property
    def eot_token_id(self) -> int:
        eos = self.model.tokenizer.eos_ids
        if eos:
            return int(eos[0])
        bos = self.model.tokenizer.bos_id
        if bos is None:
            raise ParameterError("model", f"{self.model.path}: the model has neither EOS nor BOS")
        return int(bos)

    @property
    def prefix_token_id(self) -> int:
        # What an empty context and the rolling log-likelihood start from: BOS, else EOS.
        bos = self.model.tokenizer.bos_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return int(self.model.n_ctx)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return Path(self.model.path).name

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if isinstance(chat_template, str):
            return chat_template
        return self.model.chat_template if chat_template else None

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.model.apply_chat_template(
            chat_history, add_generation_prompt=add_generation_prompt
        )

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs: Any
    ) -> list[int]:
        add_bos = self._add_bos if add_special_tokens is None else add_special_tokens
        return self.model.tokenize(string, add_bos=add_bos)

    def tok_decode(self, tokens: Sequence[int], **kwargs: Any) -> str:
        return self.model.detokenize(tokens)

    # -- requests ---------------------------------------------------------------------------
    def _loglikelihood_tokens(
        self,
        requests: list[tuple[tuple[str, str], list[int], list[int]]],
        disable_tqdm: bool = False,
        **kwargs: Any,
    ) -> list[tuple[float, bool]]:
        pairs = [(ctx, cont) for _, ctx, cont in requests]
        hook = self.cache_hook

        def done(i: int, score: Score) -> None:
            key = requests[i][0]
            if key is not None:
                hook.add_partial("loglikelihood", key, (score.logprob, score.is_greedy))

        scores = score_continuations(self.model, pairs, on_done=done, progress=not disable_tqdm)
        return [(s.logprob, s.is_greedy) for s in scores]

    def loglikelihood_rolling(
        self, requests: list[Instance], disable_tqdm: bool = False
    ) -> list[float]:
        windows: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        for r, req in enumerate(requests):
            (text,) = req.args
            tokens = self.tok_encode(text, add_special_tokens=False)
            for w in rolling_windows(tokens, self.prefix_token_id, self.max_length):
                windows.append(w)
                owner.append(r)
        scores = score_continuations(self.model, windows, progress=not disable_tqdm)
        totals = [0.0] * len(requests)
        for r, s in zip(owner, scores, strict=True):
            totals[r] += s.logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        eos = self.tok_decode([self.eot_token_id])
        jobs: list[GenerationRequest] = []
        for req in requests:
            context, gen_kwargs = req.args
            jobs.append(self._generation_request(context, dict(gen_kwargs), eos))
        bar = tqdm(total=len(jobs), disable=disable_tqdm, desc="generate_until")

        def done(i: int, text: str) -> None:
            self.cache_hook.add_partial("generate_until", requests[i].args, text)
            bar.update(1)

        out = generate_all(self.model, jobs, on_done=done)
        bar.close()
        return out

    def _generation_request(
        self, context: str, gen_kwargs: dict[str, Any], eos: str
    ) -> GenerationRequest:
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, self._max_gen_toks))
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_gen = int(kwargs.pop("max_gen_toks"))
        do_sample = bool(kwargs.pop("do_sample", False))
        options: dict[str, Any] = {"seed": self._seed}
        for key, value in kwargs.items():
            name = _SAMPLING_KEYS.get(key)
            if name is None:
                _warn_once(f"bitnet ignores the generation option {key}={value!r}")
            else:
                options[name] = int(value) if name in ("top_k", "seed") else float(value)
        if not do_sample:
            options["temperature"] = 0.0  # greedy: always the likeliest token
        else:  # the harness's sampled tasks expect an unrestricted draw unless they say otherwise
            options.setdefault("temperature", 1.0)
            options.setdefault("top_k", 0)
            options.setdefault("top_p", 1.0)
            options.setdefault("min_p", 0.0)
        if max_gen >= self.max_length:
            raise ParameterError(
                "max_gen_toks",
                f"max_gen_toks ({max_gen}) must be less than the context ({self.max_length})",
            )
        ids = self.tok_encode(context)
        ids = ids[-(self.max_length - max_gen) :]  # the harness keeps the context's end
        return GenerationRequest(ids, max_gen, tuple(s for s in until if s), options)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _register() -> None:
    # lm_eval.models was imported above, so the registry holds the harness's own backends and
    # get_model() will not mistake it for empty. Registering twice is a no-op.
    register: Callable[[type[Any]], type[Any]] = model_registry.register("bitnet")
    register(BitnetLM)


_register()
