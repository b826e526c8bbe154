"""Generation off the event loop, with bounded concurrency and a bounded queue.

``model.generate`` is seconds of CPU, so it runs in a thread pool of
``max_concurrency`` threads; the pool's own queue holds the requests waiting for
a thread. A request that would make more than ``max_concurrency + max_queue``
generations running or waiting is refused at once (429 with Retry-After), so
no request waits unboundedly and memory stays bounded. The gate is a counter
under a thread lock rather than an asyncio semaphore, so it works whichever
event loop runs the app (TestClient starts one per client).

Every request holds the :class:`~app.llm.loader.LoadedModel` it started with
for its whole life: a swap replaces what new requests get, never the model
under a running generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from app.llm.errors import GenerationError, InputTooLongError, OverloadedError
from app.llm.loader import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Params:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None  # sampling draws from a generator of its own, seeded with this (None: at random)
    stop: tuple[str, ...] = ()  # generation ends once the new text contains one; the text ends before it


@dataclass(frozen=True)
class Prompt:
    """Messages turned into token ids by the model's chat template."""

    model: LoadedModel
    input_ids: Any  # a (1, n) LongTensor
    tokens: int


@dataclass(frozen=True)
class Completion:
    model: LoadedModel
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string), "length" (max_new_tokens) or "cancelled"
    seconds: float
    first_token_seconds: float | None = None  # from admission (queueing included) to the first token
    queued_seconds: float = 0.0  # from admission to a thread taking the generation
    seed: int | None = None  # the seed the request gave, if any

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def encode_prompt(model: LoadedModel, messages: list[dict[str, str]], max_new_tokens: int, max_input_tokens: int
                  ) -> Prompt:
    """Apply the chat template; refuse (422) a prompt longer than allowed or than the model can hold."""
    with model.tokenizer_lock:
        encoded = model.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    input_ids = encoded["input_ids"]
    tokens = int(input_ids.shape[-1])
    limit, why = max_input_tokens, "LLM_MAX_INPUT_TOKENS"
    if model.max_positions is not None and model.max_positions - max_new_tokens < limit:
        limit = model.max_positions - max_new_tokens
        why = f"the model's context ({model.max_positions}) - max_new_tokens"
    if tokens > limit:
        reason = f"the prompt is {tokens} tokens after the chat template; at most {max(limit, 0)} fit ({why})"
        raise InputTooLongError(f"invalid request: messages: {reason}",
                                [{"field": "messages", "reason": reason, "type": "too_long"}])
    return Prompt(model, input_ids, tokens)


class _Cancelled:
    """A stopping criterion that ends generation when the client has gone away."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stop_at(text: str, stop: tuple[str, ...]) -> int | None:
    """Where the first stop string in ``text`` begins, or None when it holds none."""
    found = [index for s in stop if (index := text.find(s)) >= 0]
    return min(found) if found else None


def _sendable(text: str, stop: tuple[str, ...]) -> str:
    """What of the text so far may be sent: what precedes a stop string, less a suffix that could begin one."""
    cut = stop_at(text, stop)
    if cut is not None:
        return text[:cut]
    for start in range(max(len(text) - max((len(s) for s in stop), default=1) + 1, 0), len(text)):
        if any(s.startswith(text[start:]) for s in stop):
            return text[:start]
    return text


class _StopStrings:
    """A stopping criterion that ends generation once the new text, decoded, contains a stop string.

    Not transformers' ``StopStringCriteria``: measured with SmolLM2's 49k-token vocabulary, building
    it costs 0.3 to 0.7 s a request (its cache of vocabulary tables still hashes the whole vocabulary
    on every hit), under the tokenizer lock the event loop also takes; and it matches at the end of
    the whole sequence, so a stop string that spans the prompt's end ("\\nUser" after a template's
    "assistant\\n") stops a generation whose text holds no stop string. Decoding the new tokens
    each step is exact and costs 5 to 50 µs here (16 to 256 tokens; the streamer does it anyway).
    """

    def __init__(self, model: LoadedModel, prompt_tokens: int, stop: tuple[str, ...]) -> None:
        self.model, self.prompt_tokens, self.stop = model, prompt_tokens, stop

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        with self.model.tokenizer_lock:
            texts = self.model.tokenizer.batch_decode(input_ids[:, self.prompt_tokens:], skip_special_tokens=True)
        hits = [stop_at(text, self.stop) is not None for text in texts]
        return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)


class _TextStreamer:
    """Receives token ids from ``generate`` (in its thread) and hands text deltas to ``emit``.

    The whole completion is decoded each time and only the new suffix sent, so a character split
    over several byte-level tokens is sent once complete (never a replacement character while more
    tokens come). With stop strings, text that could be the start of one is held back until it
    turns out not to be, and nothing from a stop string on is sent. At the end, what was held back
    is sent, so the deltas add up to the completion's text.
    """

    def __init__(self, model: LoadedModel, emit: Callable[[str], None], stop: tuple[str, ...] = ()) -> None:
        self.model, self.emit, self.stop = model, emit, stop
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False
        self.first_token_at: float | None = None

    def _decoded(self) -> str:
        with self.model.tokenizer_lock:
            return self.model.tokenizer.decode(self.ids, skip_special_tokens=True)

    def _send(self, text: str) -> None:
        if not text.startswith(self.sent):
            return
        delta, self.sent = text[len(self.sent):], text
        if delta:
            self.emit(delta)

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() puts the prompt first
            self.prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self._decoded()
        if not text.endswith("\ufffd"):
            self._send(_sendable(text, self.stop))

    def end(self) -> None:
        text = self._decoded()
        cut = stop_at(text, self.stop)
        self._send(text if cut is None else text[:cut])


class _SeededSampler:
    """The sampling draw of ``generate(do_sample=True)``, from one request's own ``torch.Generator``.

    ``generate`` samples with ``torch.multinomial`` from the process-wide generator, which every
    concurrent request advances: no seed could pin an answer. This logits processor, last in the
    list, draws the next token from the softmax of the warped scores with the request's generator
    and leaves only that token finite, so greedy selection takes it.
    """

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float(), dim=-1)
        chosen = torch.multinomial(probs, num_samples=1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter_(-1, chosen, 0.0)


LIBRARY_TOP_K = 50  # what transformers' generate applies when sampling and the model sets no top_k


def _decoding(params: Params, model: Any) -> dict[str, Any]:
    """``generate`` arguments: greedy for temperature 0, else sampling seeded per request.

    Sampling runs as greedy decoding over the library's own warpers, built as ``do_sample`` builds
    them and in its order (the request's temperature, the model's top-k or the library's 50, the
    request's top-p, the model's min-p and typical-p), then :class:`_SeededSampler`: the distribution
    is ``do_sample``'s, and the seed is this request's alone. (The rarely set top-h, epsilon and eta
    cutoffs of a model's generation config are not applied.)
    """
    import torch
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if params.temperature <= 0:
        return greedy
    generator = torch.Generator(device=model.device)
    if params.seed is None:
        generator.seed()  # a fresh non-deterministic seed: unseeded sampling stays random
    else:
        generator.manual_seed(params.seed)
    config = model.generation_config
    top_k = LIBRARY_TOP_K if config.top_k is None else config.top_k
    processors: list[Any] = []
    if params.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(params.temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if params.top_p < 1.0:
        processors.append(TopPLogitsWarper(params.top_p))
    if config.min_p is not None:
        processors.append(MinPLogitsWarper(config.min_p))
    if config.typical_p is not None and config.typical_p < 1.0:
        processors.append(TypicalLogitsWarper(config.typical_p))
    processors.append(_SeededSampler(generator))
    return {**greedy, "logits_processor": LogitsProcessorList(processors)}


def _eos_ids(model: LoadedModel) -> set[int]:
    eos = model.model.generation_config.eos_token_id
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list | tuple) else ({eos} if eos is not None else set())


def generate(prompt: Prompt, params: Params, *, streamer: _TextStreamer | None = None,
             cancel: threading.Event | None = None, admitted: float | None = None) -> Completion:
    """Run ``generate`` (blocking: call it from a worker thread) and decode the new tokens.

    ``admitted`` is when the request was let in: the time to first token counts from there, as the
    client waits from there; the generation time counts from here, so tokens/s measures the model.
    """
    import torch

    started = time.perf_counter()
    admitted = started if admitted is None else admitted
    loaded, cancel = prompt.model, cancel or threading.Event()
    tokenizer, model = loaded.tokenizer, loaded.model
    decoding = _decoding(params, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    criteria: list[Any] = [_Cancelled(cancel)]
    if params.stop:
        criteria.append(_StopStrings(loaded, prompt.tokens, params.stop))
    try:
        with torch.inference_mode():
            output = model.generate(
                input_ids=prompt.input_ids, attention_mask=torch.ones_like(prompt.input_ids),
                max_new_tokens=params.max_new_tokens, pad_token_id=pad, streamer=streamer,
                stopping_criteria=criteria, **decoding,
            )
    except Exception as error:
        log.exception("generation with %s failed", loaded.model_id, extra={"model_id": loaded.model_id})
        raise GenerationError(f"the model {loaded.model_id!r} failed to generate: {type(error).__name__}") from error
    new_ids = output[0][prompt.tokens:].tolist()
    with loaded.tokenizer_lock:
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
    cut = stop_at(text, params.stop)
    if cut is not None:
        text = text[:cut]  # the stop string and what follows it are not part of the answer
    if cancel.is_set():
        finish = "cancelled"
    elif cut is not None or (new_ids and new_ids[-1] in _eos_ids(loaded)):
        finish = "stop"
    else:
        finish = "length" if len(new_ids) >= params.max_new_tokens else "stop"
    first = streamer.first_token_at - admitted if streamer and streamer.first_token_at else None
    return Completion(loaded, text, prompt.tokens, len(new_ids), finish, time.perf_counter() - started, first,
                      queued_seconds=started - admitted, seed=params.seed)


_DONE = object()
DISCONNECT_POLL_S = 0.2


class Generator:
    """The bounded pool that runs generations; one per app."""

    def __init__(self, max_concurrency: int, max_queue: int, retry_after_s: int = 2,
                 on_depth: Callable[[int], None] = lambda depth: None,
                 on_completion: Callable[[Completion], None] = lambda completion: None,
                 on_abandoned: Callable[[], None] = lambda: None) -> None:
        """``on_completion`` sees every generation that ends, as it ends (in its thread, before its
        client is told), one cut short because its client left included; ``on_abandoned`` hears of
        each request that never ran: its stream was closed while it waited, or the pool shut down."""
        self.max_concurrency, self.max_queue, self.retry_after_s = max_concurrency, max_queue, retry_after_s
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._depth = 0
        self._on_depth = on_depth
        self._on_completion, self._on_abandoned = on_completion, on_abandoned

    @property
    def depth(self) -> int:
        """Generations running plus waiting."""
        return self._depth

    def _admit(self) -> None:
        with self._lock:
            if self._depth >= self.max_concurrency + self.max_queue:
                raise OverloadedError(
                    f"{self._depth} generations are running or waiting (LLM_MAX_CONCURRENCY={self.max_concurrency}, "
                    f"LLM_MAX_QUEUE={self.max_queue}); retry in {self.retry_after_s} s",
                    retry_after_s=self.retry_after_s,
                )
            self._depth += 1
            self._on_depth(self._depth)

    def _release(self, _future: Future | None = None) -> None:
        with self._lock:
            self._depth -= 1
            self._on_depth(self._depth)

    def start(self) -> None:
        """Create the thread pool (again after :meth:`shutdown`: an app's lifespan may run more than once)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="generate")

    def _submit(self, fn: Callable[..., Completion], *args: Any, **kwargs: Any) -> Future:
        self.start()
        self._admit()
        try:
            assert self._executor is not None
            future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._observe)  # first: once the depth is 0, every generation is counted
        future.add_done_callback(self._release)
        return future

    def _observe(self, future: Future) -> None:
        if future.cancelled():
            self._on_abandoned()  # the stream was closed while it waited: it never ran
        elif future.exception() is None:
            self._on_completion(future.result())

    async def complete(self, prompt: Prompt, params: Params,
                       is_disconnected: Callable[[], Awaitable[bool]] | None = None) -> Completion:
        """Generate the whole completion; raises :class:`OverloadedError` at once when the queue is full.

        A server does not cancel a plain (not streamed) request whose client went away, so
        ``is_disconnected`` is polled while the generation runs: once it says so, the generation
        stops at its next token (``finish_reason`` "cancelled") and frees its thread.
        """
        cancel = threading.Event()
        future = asyncio.wrap_future(
            self._submit(generate, prompt, params, cancel=cancel, admitted=time.perf_counter())
        )
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
                if done:
                    return future.result()
                if is_disconnected is not None and not cancel.is_set() and await is_disconnected():
                    cancel.set()
        except asyncio.CancelledError:
            cancel.set()  # the request's task was cancelled: stop at the next token
            raise

    def stream(self, prompt: Prompt, params: Params) -> AsyncIterator[tuple[str, Any]]:
        """Start a generation now (refusing it now when overloaded) and iterate over its events:
        ``("token", text)`` for each piece of text, then ``("done", Completion)``."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        admitted = time.perf_counter()

        def put(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
                loop.call_soon_threadsafe(queue.put_nowait, item)

        streamer = _TextStreamer(prompt.model, put, params.stop)
        future = self._submit(generate, prompt, params, streamer=streamer, cancel=cancel, admitted=admitted)
        future.add_done_callback(lambda _: put(_DONE))
        return self._events(queue, future, cancel)

    @staticmethod
    async def _events(queue: asyncio.Queue, future: Future, cancel: threading.Event
                      ) -> AsyncIterator[tuple[str, Any]]:
        try:
            while (item := await queue.get()) is not _DONE:
                yield "token", item
            yield "done", future.result()
        finally:
            cancel.set()
            future.cancel()

    def shutdown(self) -> None:
        """Cancel what waits, let running generations end in their threads, and drop the pool."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
