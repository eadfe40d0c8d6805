"""Model's generation methods, all running on the engine (:mod:`bitnet.engine`).

``generate``/``stream``/``complete``/``submit``/``generate_batch`` and their chat twins submit a
request to the model's engine; calls from many threads at once are batched into the same steps.
Every option is a field of :class:`~bitnet.engine.SamplingParams`, validated when the call is
made: a bad value raises :class:`~bitnet.errors.ParameterError` naming the option, before any
work starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .engine import Completion, RequestHandle, SamplingParams
from .engine.results import Chunk
from .errors import QueueFullError

if TYPE_CHECKING:
    from .engine import Engine
    from .tokenizer import Tokenizer

__all__ = ["GenerationMixin", "JsonSchema", "Message", "Prompt", "sampling_params"]

Message = Mapping[str, Any]
Prompt = str | Sequence[int]
JsonSchema = Mapping[str, Any] | str | bool | None

_FIELDS = tuple(SamplingParams.__dataclass_fields__)


def sampling_params(options: Mapping[str, Any]) -> SamplingParams:
    """SamplingParams from the option arguments of a call (its ``locals()``)."""
    return SamplingParams(**{k: options[k] for k in _FIELDS})


class TextIterator:
    """The pieces of text of one request, as ``stream`` yields them.

    Dropping it (``break``, an exception, garbage collection) or calling :meth:`close` before the
    end cancels the request at the engine's next step.
    """

    def __init__(self, handle: RequestHandle) -> None:
        self.handle = handle
        self._chunks: Iterator[Chunk] = iter(handle)
        self._finished = False

    def __iter__(self) -> TextIterator:
        return self

    def __next__(self) -> str:
        while not self._finished:
            chunk = next(self._chunks)  # an exception while waiting cancels the request
            if chunk.finish_reason is not None:
                self._finished = True
            if chunk.text:
                return chunk.text
        raise StopIteration

    def close(self) -> None:
        """Cancels the request if it is still running."""
        self._finished = True
        self.handle.cancel()

    def __del__(self) -> None:
        if not self._finished:
            self.handle.cancel()


class GenerationMixin:
    """The generation methods of :class:`bitnet.Model` (see the module docstring)."""

    if TYPE_CHECKING:

        @property
        def engine(self) -> Engine: ...
        @property
        def tokenizer(self) -> Tokenizer: ...
        def apply_chat_template(
            self,
            messages: Sequence[Message],
            *,
            add_generation_prompt: bool = True,
            chat_template: str | None = None,
        ) -> str: ...

    def submit(
        self,
        prompt: Prompt,
        *,
        request_id: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = (),
        ignore_eos: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
        json_schema: JsonSchema = None,
    ) -> RequestHandle:
        """Queues a request on the engine and returns its handle at once.

        Iterate the handle for :class:`~bitnet.engine.Chunk` objects (also with ``async for``),
        or call ``result()`` / ``await aresult()`` for the :class:`~bitnet.engine.Completion`;
        ``cancel()`` stops it at the next step.

        Args:
            prompt: Text, or token ids.
            request_id: An id for the request (None: one is made up).
            max_tokens: See :meth:`generate` for this and every other option.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            presence_penalty: See :meth:`generate`.
            frequency_penalty: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.
            ignore_eos: See :meth:`generate`.
            logprobs: See :meth:`generate`.
            top_logprobs: See :meth:`generate`.
            json_schema: See :meth:`generate`.

        Raises:
            QueueFullError: The engine's queue is full (``retry_after_s`` suggests a wait).
            ContextLengthError: The prompt is longer than the context.
            ParameterError: An option is invalid (names it).

        Example:
            >>> h = model.submit("Once upon a time", max_tokens=16, seed=1)  # doctest: +SKIP
            >>> for chunk in h:  # doctest: +SKIP
            ...     print(chunk.text, end="")
        """
        params = sampling_params(locals())
        handle = self.engine.submit(prompt, params, request_id)
        handle._keepalive = self  # the model (and its engine) live while the handle does
        return handle

    def complete(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = (),
        ignore_eos: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
        json_schema: JsonSchema = None,
    ) -> Completion:
        """Continues a prompt and returns the whole result: text, token ids, why it ended
        (``finish_reason``), token counts, timings and, when asked, log-probabilities.

        Args:
            prompt: Text, or token ids.
            max_tokens: See :meth:`generate` for this and every other option.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            presence_penalty: See :meth:`generate`.
            frequency_penalty: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.
            ignore_eos: See :meth:`generate`.
            logprobs: See :meth:`generate`.
            top_logprobs: See :meth:`generate`.
            json_schema: See :meth:`generate`.

        Example:
            >>> c = model.complete("1, 2, 3,", max_tokens=8, temperature=0)  # doctest: +SKIP
            >>> c.text, c.finish_reason, c.completion_tokens  # doctest: +SKIP
            (' 4, 5, 6, 7,', 'length', 8)
        """
        return self._submit_params(prompt, sampling_params(locals())).result()

    def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = (),
        ignore_eos: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
        json_schema: JsonSchema = None,
    ) -> str:
        """Continues a prompt; returns the generated text.

        Generation ends at an end-of-sequence or end-of-turn token, at the first stop string
        (not included), after max_tokens tokens, or when the context is full; :meth:`complete`
        says which. Many threads may call this at once: their requests share the engine's steps.
        Ctrl-C (or any exception) while waiting cancels the request at the next step.

        Args:
            prompt: The text to continue (special-token text is read as special tokens; the BOS
                token is added when the model asks for it), or token ids.
            max_tokens: Most tokens to generate (0: only process the prompt).
            temperature: Divides the logits; 0 means greedy (always the likeliest token).
            top_k: Sample among the k likeliest tokens (0: all).
            top_p: Sample among the likeliest tokens whose probabilities add up to top_p
                (1: all).
            min_p: Drop tokens less likely than min_p times the likeliest one (0: none).
            repeat_penalty: Penalty for tokens among the last repeat_last_n (1: none): a
                positive logit is divided by it, a negative one multiplied.
            repeat_last_n: How many recent tokens (prompt included) the repeat penalty looks at.
            presence_penalty: OpenAI's: subtracted once from the logit of every token generated
                so far (-2 to 2).
            frequency_penalty: OpenAI's: subtracted from a token's logit once per time it was
                generated so far (-2 to 2).
            seed: Seed of the random draw: the same seed gives the same text, whether the
                request runs alone or batched with others. None draws a fresh one.
            stop: A string or strings that end generation, even when they span tokens.
            ignore_eos: Keep going past end-of-sequence tokens (for benchmarks).
            logprobs: Compute each generated token's log-probability (see :meth:`complete`).
            top_logprobs: Also the likeliest alternatives per token (0 to 20).
            json_schema: Constrain the output to JSON matching this schema (a dict or JSON
                text; True: any JSON object).

        Returns:
            The generated text.

        Raises:
            ContextLengthError: The prompt is longer than the context (gives both numbers).
            QueueFullError: The engine's queue of waiting requests is full.
            ParameterError: An option is out of range or of the wrong type (names it).

        Example:
            >>> model.generate("1, 2, 3,", max_tokens=8, temperature=0, stop="6")  # doctest: +SKIP
            ' 4, 5, '
        """
        return self._submit_params(prompt, sampling_params(locals())).result().text

    def stream(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = (),
        ignore_eos: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
        json_schema: JsonSchema = None,
    ) -> Iterator[str]:
        """Continues a prompt, yielding text as it is generated.

        The pieces joined are exactly what :meth:`generate` returns with the same options and
        seed. Every piece is valid text: a character whose bytes span several tokens comes out
        whole, and text that may begin a stop string is held back until it is clear. Errors in
        the options or the prompt are raised here, at the call. Stopping the iteration early
        (``break``, Ctrl-C, dropping the iterator) cancels the request at the next step.

        Args:
            prompt: Text, or token ids.
            max_tokens: See :meth:`generate` for this and every other option.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            presence_penalty: See :meth:`generate`.
            frequency_penalty: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.
            ignore_eos: See :meth:`generate`.
            logprobs: See :meth:`generate`.
            top_logprobs: See :meth:`generate`.
            json_schema: See :meth:`generate`.

        Yields:
            Pieces of generated text (never empty).

        Example:
            >>> for piece in model.stream("Once upon a time", max_tokens=32):  # doctest: +SKIP
            ...     print(piece, end="", flush=True)
        """
        return TextIterator(self._submit_params(prompt, sampling_params(locals())))

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = (),
        ignore_eos: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
        json_schema: JsonSchema = None,
    ) -> list[Completion]:
        """Continues many prompts together (batched by the engine); results in prompt order.

        Each prompt's result is what :meth:`complete` gives for it alone with the same options
        (with a seed, every prompt uses that seed). More prompts than the queue holds are fed
        in as room frees up. An exception (Ctrl-C) cancels every request still running.

        Args:
            prompts: Texts, or token-id sequences.
            max_tokens: See :meth:`generate` for this and every other option.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            presence_penalty: See :meth:`generate`.
            frequency_penalty: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.
            ignore_eos: See :meth:`generate`.
            logprobs: See :meth:`generate`.
            top_logprobs: See :meth:`generate`.
            json_schema: See :meth:`generate`.

        Returns:
            One Completion per prompt, in order.

        Example:
            >>> results = model.generate_batch(["Hello", "Goodbye"], max_tokens=8, seed=0)  # doctest: +SKIP
            >>> [r.text for r in results]  # doctest: +SKIP
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        params = sampling_params(locals())
        handles: list[RequestHandle] = []
        try:
            for p in prompts:
                while True:
                    try:
                        handles.append(self._submit_params(p, params))
                        break
                    except QueueFullError:
                        # Wait for the oldest unfinished request to make room, then retry.
                        pending = [h for h in handles if not h.done]
                        if not pending:
                            raise
                        pending[0].result()
            return [h.result() for h in handles]
        except BaseException:
            for h in handles:
                h.cancel()
            raise

    # -- chat ------------------------------------------------------------------------------------
    def chat_complete(
        self,
        messages: Sequence[Message],
        *,
        chat_template: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = (),
        ignore_eos: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
        json_schema: JsonSchema = None,
    ) -> Completion:
        """The assistant's reply to a conversation, as a full result (see :meth:`complete`).

        Args:
            messages: Dicts with "role" and "content", oldest first.
            chat_template: A Jinja2 template to use instead of the model's own.
            max_tokens: See :meth:`generate` for this and every other option.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            presence_penalty: See :meth:`generate`.
            frequency_penalty: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.
            ignore_eos: See :meth:`generate`.
            logprobs: See :meth:`generate`.
            top_logprobs: See :meth:`generate`.
            json_schema: See :meth:`generate`.
        """
        params = sampling_params(locals())
        return self._submit_chat(messages, chat_template, params).result()

    def chat(
        self,
        messages: Sequence[Message],
        *,
        chat_template: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = (),
        ignore_eos: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
        json_schema: JsonSchema = None,
    ) -> str:
        """The assistant's reply to a conversation.

        The conversation is rendered with the chat template and the reply ends at the model's
        end-of-turn token. Calling again with the reply and a new user message appended reuses
        the cached computation of the shared beginning (the engine's prefix cache).

        Args:
            messages: Dicts with "role" and "content", oldest first.
            chat_template: A Jinja2 template to use instead of the model's own.
            max_tokens: See :meth:`generate` for this and every other option.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            presence_penalty: See :meth:`generate`.
            frequency_penalty: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.
            ignore_eos: See :meth:`generate`.
            logprobs: See :meth:`generate`.
            top_logprobs: See :meth:`generate`.
            json_schema: See :meth:`generate`.

        Returns:
            The reply text.

        Example:
            >>> history = [{"role": "user", "content": "Name a colour."}]  # doctest: +SKIP
            >>> reply = model.chat(history, seed=0)  # doctest: +SKIP
            >>> history += [{"role": "assistant", "content": reply},
            ...             {"role": "user", "content": "Another?"}]  # doctest: +SKIP
            >>> model.chat(history, seed=0)  # doctest: +SKIP
        """
        params = sampling_params(locals())
        return self._submit_chat(messages, chat_template, params).result().text

    def chat_stream(
        self,
        messages: Sequence[Message],
        *,
        chat_template: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = (),
        ignore_eos: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
        json_schema: JsonSchema = None,
    ) -> Iterator[str]:
        """The assistant's reply to a conversation, yielded as it is generated (see
        :meth:`stream`).

        Args:
            messages: See :meth:`chat`.
            chat_template: See :meth:`chat`.
            max_tokens: See :meth:`generate` for this and every other option.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            presence_penalty: See :meth:`generate`.
            frequency_penalty: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.
            ignore_eos: See :meth:`generate`.
            logprobs: See :meth:`generate`.
            top_logprobs: See :meth:`generate`.
            json_schema: See :meth:`generate`.

        Yields:
            Pieces of the reply.
        """
        params = sampling_params(locals())
        return TextIterator(self._submit_chat(messages, chat_template, params))

    # -- shared ----------------------------------------------------------------------------------
    def _submit_params(
        self, prompt: Prompt, params: SamplingParams, *, strip_leading_space: bool = False
    ) -> RequestHandle:
        handle = self.engine.submit(prompt, params, strip_leading_space=strip_leading_space)
        handle._keepalive = self
        return handle

    def _submit_chat(
        self, messages: Sequence[Message], chat_template: str | None, params: SamplingParams
    ) -> RequestHandle:
        prompt = self.apply_chat_template(messages, chat_template=chat_template)
        return self._submit_params(
            prompt, params, strip_leading_space=self.tokenizer.strip_leading_space
        )
