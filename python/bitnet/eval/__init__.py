"""Measuring quality: perplexity (bitnet's and llama.cpp's methods), KL divergence between engine
options, and the lm-evaluation-harness backend.

Perplexity and KL divergence need nothing beyond bitnet. :func:`evaluate` and the ``bitnet``
backend of the harness need ``pip install 'bitnet[eval]'`` (lm-eval).

Example:
    >>> from bitnet.eval import perplexity, kl_divergence, evaluate
    >>> perplexity(model, text, method="llama.cpp", window=512).ppl  # doctest: +SKIP
    >>> exact = bitnet.load(path, output_type="f32", kv_cache="f32", isa="ref")  # doctest: +SKIP
    >>> kl_divergence(model, text, base=exact).kl_mean  # doctest: +SKIP
    >>> evaluate(model, tasks=["arc_easy"], limit=100)["results"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .kl import KlResult, KlStats, kl_divergence
from .perplexity import (
    METHODS,
    PerplexityResult,
    perplexity,
    perplexity_llama_cpp,
    perplexity_sliding,
    scored_logits,
)
from .scoring import Score, rolling_windows, score_continuations

if TYPE_CHECKING:
    from ..model import Model

__all__ = [
    "METHODS",
    "KlResult",
    "KlStats",
    "PerplexityResult",
    "Score",
    "evaluate",
    "kl_divergence",
    "perplexity",
    "perplexity_llama_cpp",
    "perplexity_sliding",
    "rolling_windows",
    "score_continuations",
    "scored_logits",
]


def evaluate(
    model: Model | str,
    *,
    tasks: Sequence[str | dict[str, Any]],
    include_path: str | Sequence[str] | None = None,
    include_defaults: bool = True,
    model_args: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Runs lm-evaluation-harness tasks on a bitnet model.

    Args:
        model: A loaded :class:`bitnet.Model`, or a path / hub name to load.
        tasks: Task names of the harness (``"arc_easy"``, ``"hellaswag"``...), or task configs.
        include_path: Directories with more task YAML files (the harness's ``--include_path``).
        include_defaults: Also index the harness's own tasks (False: only include_path's,
            which starts much faster).
        model_args: Options of the backend when model is a name: n_ctx, n_threads, kv_cache,
            output_type, isa, kernel, add_bos, max_gen_toks, seed (:class:`BitnetLM`).
        **kwargs: Passed to ``lm_eval.simple_evaluate`` (num_fewshot, limit, log_samples,
            gen_kwargs, bootstrap_iters, apply_chat_template, ...).

    Returns:
        The harness's results dict (``results``, ``groups``, ``configs``, ``samples`` ...).

    Raises:
        ImportError: lm-eval is not installed (``pip install 'bitnet[eval]'``).
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "bitnet.eval.evaluate needs lm-evaluation-harness: pip install 'bitnet[eval]'"
        ) from e
    from .harness import BitnetLM

    lm = BitnetLM(model, **(model_args or {}))
    paths = [include_path] if isinstance(include_path, str) else include_path
    manager = TaskManager(
        include_path=list(paths) if paths else None, include_defaults=include_defaults
    )
    results = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, **kwargs)
    if results is None:  # only on non-zero ranks of distributed runs, which we never start
        raise RuntimeError("lm_eval.simple_evaluate returned no results")
    return dict(results)
