"""Generation off the event loop: continuous batching, a bounded batch and a bounded queue.

On a CPU, one ``generate`` at a time leaves most of each forward pass's matrix
work undone: eight prompts decoded together cost little more than one. So one
worker thread runs one batch of up to ``max_batch_size`` sequences, a forward
pass a step for all of them with a KV cache (left padding, an attention mask and
position ids that count each row's real tokens, so a row decodes as it would
alone: greedy answers are ``generate``'s, token for token). Requests that arrive
while it runs join it between steps; finished ones leave. Each sequence keeps
its own max_new_tokens, stop strings, temperature, top-p and seeded generator,
its own streamer and cancel event.

A request that would make more than ``max_batch_size + max_queue`` generations
running or waiting is refused at once (429), so no request waits unboundedly and
memory stays bounded. Its Retry-After is how long the generations running and
waiting take to drain at the recent pace (:meth:`Generator.retry_after`). The gate is a counter under a
thread lock rather than an asyncio semaphore, so it works whichever event loop
runs the app (TestClient starts one per client).

Every request holds the :class:`~app.llm.loader.LoadedModel` it started with
for its whole life, and a batch holds one model: a swap replaces what new
requests get, never the model under a running generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from app.llm.errors import ControlTokenError, GenerationError, InputTooLongError, OverloadedError
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


def refuse_control_tokens(model: LoadedModel, messages: list[dict[str, str]]) -> None:
    """422 naming the first control token a message's content holds, and the field (``messages[1].content``)."""
    for index, message in enumerate(messages):
        token = next((t for t in model.control_tokens if t in message["content"]), None)
        if token is not None:
            field = f"messages[{index}].content"
            reason = (f"contains {token!r}, a control token of the model {model.model_id!r}, whose tokenizer cannot "
                      "encode it as plain text; remove it")
            raise ControlTokenError(f"invalid request: {field}: {reason}",
                                    [{"field": field, "reason": reason, "type": "control_token"}])


def encode_prompt(model: LoadedModel, messages: list[dict[str, str]], max_new_tokens: int, max_input_tokens: int
                  ) -> Prompt:
    """Apply the chat template; refuse (422) a prompt longer than allowed or than the model can hold.

    Control tokens that a message spells (``<|im_start|>system``) are encoded as the plain text they are
    (transformers' ``sanitize_control_tokens``): only the template writes control tokens, so no message can
    forge a turn or end one. For a tokenizer that cannot do so (``LoadedModel.control_tokens_as_text``),
    such a message is refused with a 422 naming the token and the field.
    """
    if not model.control_tokens_as_text:
        refuse_control_tokens(model, messages)
    sanitize = {"sanitize_control_tokens": True} if model.control_tokens_as_text else {}
    with model.tokenizer_lock:
        encoded = model.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True, **sanitize
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


def _forward(model: Any, **inputs: Any) -> Any:
    """One forward pass of the whole batch (the only place the model runs; tests hold it here)."""
    return model(**inputs)


RECENT_GENERATIONS = 32  # finished generations whose mean time sets a 429's Retry-After
RETRY_AFTER_MAX_S = 120  # the longest Retry-After the official openai client waits for (beyond it, it gives up)
PREFILL_TOKENS = 4096  # padded prompt tokens prefilled in one forward pass, at most (one longer prompt: alone)


@dataclass(eq=False)
class _Sequence:
    """One request in the batch: its prompt, how it decodes, what it has generated, whom to tell."""

    prompt: Prompt
    params: Params
    streamer: _TextStreamer | None
    cancel: threading.Event
    admitted: float
    future: Future = field(default_factory=Future)
    processors: Any = None  # the sampling warpers and seeded draw; None for greedy
    ids: list[int] = field(default_factory=list)
    started: float = 0.0
    first_token_at: float | None = None
    counted: bool = False  # its outcome has been reported (once: by the worker or by its client's side)

    def context(self) -> Any:
        import torch

        new = torch.tensor([self.ids], dtype=self.prompt.input_ids.dtype, device=self.prompt.input_ids.device)
        return torch.cat([self.prompt.input_ids, new], dim=-1)


class _Batch:
    """The sequences decoding together on one model, their KV cache, attention mask and last tokens.

    Rows are left-padded: every row's cache ends at the same column, so one decoding step feeds each
    row its last token at once; the attention mask hides the padding and the position ids count only a
    row's real tokens, so a row decodes as it would alone. Sequences join between steps (their prompts
    prefilled together, their cache padded on the left to the batch's width, or the batch's to theirs)
    and leave as they finish (their rows dropped, then columns that only padding holds).
    """

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.rows: list[_Sequence] = []
        self.cache: Any = None
        self.mask: Any = None  # (rows, width) LongTensor
        self.eos = _eos_ids(model)
        forward = getattr(model.model, "forward", None)
        try:
            self.logits_to_keep = forward is not None and "logits_to_keep" in inspect.signature(forward).parameters
        except (TypeError, ValueError):
            self.logits_to_keep = False

    def _pad_id(self) -> int:
        tokenizer = self.model.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return int(pad or 0)

    def join(self, joining: list[_Sequence]) -> None:
        """Prefill the joining prompts, left-padded, in passes of at most PREFILL_TOKENS padded tokens (the
        attention of a pass grows with rows x width^2), pick each one's first token, add their rows."""
        group: list[_Sequence] = []
        for seq in sorted(joining, key=lambda s: s.prompt.tokens):
            if group and (len(group) + 1) * seq.prompt.tokens > PREFILL_TOKENS:
                self._prefill(group)
                group = []
            group.append(seq)
        self._prefill(group)

    def _prefill(self, joining: list[_Sequence]) -> None:
        import torch

        device = self.model.model.device
        width = max(s.prompt.tokens for s in joining)
        ids = torch.full((len(joining), width), self._pad_id(), dtype=torch.long, device=device)
        mask = torch.zeros((len(joining), width), dtype=torch.long, device=device)
        for row, seq in enumerate(joining):
            ids[row, width - seq.prompt.tokens:] = seq.prompt.input_ids[0]
            mask[row, width - seq.prompt.tokens:] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)
        extra = {"logits_to_keep": 1} if self.logits_to_keep else {}
        out = _forward(self.model.model, input_ids=ids, attention_mask=mask, position_ids=positions,
                       use_cache=True, **extra)
        logits = out.logits[:, -1, :].to(dtype=torch.float32)
        self._merge(out.past_key_values, mask, joining)
        self._advance(joining, logits)

    def _merge(self, cache: Any, mask: Any, joining: list[_Sequence]) -> None:
        import torch
        import torch.nn.functional as F

        if self.cache is None:
            self.cache, self.mask, self.rows = cache, mask, list(joining)
            return
        ours, theirs = self.mask.shape[1], mask.shape[1]
        width = max(ours, theirs)
        for mine, new in zip(self.cache.layers, cache.layers, strict=True):
            for name in ("keys", "values"):
                a, b = getattr(mine, name), getattr(new, name)
                a = F.pad(a, (0, 0, width - ours, 0)) if ours < width else a
                b = F.pad(b, (0, 0, width - theirs, 0)) if theirs < width else b
                setattr(mine, name, torch.cat([a, b], dim=0))
        self.mask = torch.cat([F.pad(self.mask, (width - ours, 0)), F.pad(mask, (width - theirs, 0))], dim=0)
        self.rows.extend(joining)

    def step(self) -> None:
        """One decoding step: every row's last token in, every row's next token chosen."""
        import torch

        device = self.mask.device
        last = torch.tensor([[seq.ids[-1]] for seq in self.rows], dtype=torch.long, device=device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        positions = self.mask.sum(-1, keepdim=True) - 1
        out = _forward(self.model.model, input_ids=last, attention_mask=self.mask, position_ids=positions,
                       past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self._advance(list(self.rows), out.logits[:, -1, :].to(dtype=torch.float32))

    def _advance(self, seqs: list[_Sequence], logits: Any) -> None:
        """Choose each sequence's next token (greedy, or its own warpers and seeded draw), tell its client,
        and end the sequences that are done."""
        import torch

        now = time.perf_counter()
        done: list[_Sequence] = []
        for row, seq in enumerate(seqs):
            scores = logits[row:row + 1]
            context = seq.context()
            if seq.processors is not None:
                scores = seq.processors(context, scores)
            token = int(scores.argmax(dim=-1))
            seq.ids.append(token)
            if seq.first_token_at is None:
                seq.first_token_at = now
            if seq.streamer is not None:
                seq.streamer.put(torch.tensor([token]))
            if self._finished(seq, token, torch.cat([context, context.new_tensor([[token]])], dim=-1), scores):
                done.append(seq)
        if done:
            self._drop(done)

    def _finished(self, seq: _Sequence, token: int, context: Any, scores: Any) -> bool:
        if bool(_Cancelled(seq.cancel)(context, scores)[0]):
            return True
        if token in self.eos or len(seq.ids) >= seq.params.max_new_tokens:
            return True
        if seq.params.stop:
            with self.model.tokenizer_lock:
                text = self.model.tokenizer.decode(seq.ids, skip_special_tokens=True)
            return stop_at(text, seq.params.stop) is not None
        return False

    def _drop(self, done: list[_Sequence]) -> None:
        import torch

        for seq in done:
            _finish(seq, self.eos)
        keep = [row for row, seq in enumerate(self.rows) if seq not in done]
        self.rows = [self.rows[row] for row in keep]
        if not self.rows:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask[index]
        start = int((self.mask.sum(0) > 0).nonzero()[0])  # columns before it are padding in every row left
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def fail(self, joining: list[_Sequence], error: Exception) -> None:
        """The model failed: every row and every joining sequence fails (the cache may be half-updated)."""
        log.error("generation with %s failed: %r", self.model.model_id, error, exc_info=error,
                  extra={"model_id": self.model.model_id})
        failure = GenerationError(f"the model {self.model.model_id!r} failed to generate: {type(error).__name__}")
        for seq in [*self.rows, *joining]:
            if not seq.future.done():
                seq.future.set_exception(failure)
        self.rows, self.cache, self.mask = [], None, None


def _finish(seq: _Sequence, eos: set[int]) -> None:
    """The sequence's Completion, as :func:`generate` makes it, handed to its future."""
    loaded, params = seq.prompt.model, seq.params
    if seq.streamer is not None:
        seq.streamer.end()
    with loaded.tokenizer_lock:
        text = loaded.tokenizer.decode(seq.ids, skip_special_tokens=True)
    cut = stop_at(text, params.stop)
    if cut is not None:
        text = text[:cut]
    if seq.cancel.is_set():
        finish = "cancelled"
    elif cut is not None or (seq.ids and seq.ids[-1] in eos):
        finish = "stop"
    else:
        finish = "length" if len(seq.ids) >= params.max_new_tokens else "stop"
    first = seq.first_token_at - seq.admitted if seq.streamer is not None and seq.first_token_at else None
    seq.future.set_result(Completion(loaded, text, seq.prompt.tokens, len(seq.ids), finish,
                                     time.perf_counter() - seq.started, first,
                                     queued_seconds=seq.started - seq.admitted, seed=params.seed))


class Generator:
    """Continuous batching of generations: one worker thread, one batch, one forward pass a step for all.

    Admitted requests wait in a FIFO; between decoding steps, waiting requests on the batch's model join
    it (up to ``max_batch_size`` rows) and finished ones leave, so a request never waits for a whole
    batch to end. A request that would make more than ``max_batch_size + max_queue`` generations
    running or waiting is refused at once (429 with Retry-After), so memory stays bounded: at most
    ``max_batch_size`` KV caches, each of at most prompt + max_new_tokens positions.

    A batch runs on the model its rows started on: after a swap, requests for the new model wait until
    the old model's batch has drained (at most its longest max_new_tokens), then form the next batch.
    """

    def __init__(self, max_batch_size: int, max_queue: int, retry_after_s: int = 2,
                 on_depth: Callable[[int], None] = lambda depth: None,
                 on_completion: Callable[[Completion], None] = lambda completion: None,
                 on_abandoned: Callable[[], None] = lambda: None,
                 retry_after_max_s: int = RETRY_AFTER_MAX_S) -> None:
        """Each admitted request is reported once: ``on_completion`` sees each generation that ran, with
        ``finish_reason`` "cancelled" when its client left before it had the whole answer (while it ran, or as
        it ended: a plain answer nobody waits for, a stream closed before its end), else when it is handed over;
        ``on_abandoned`` hears of each request that never ran (its client left while it waited, or the
        generator shut down).
        ``retry_after_s`` is a 429's Retry-After until a generation has finished, ``retry_after_max_s`` its cap."""
        self.max_batch_size, self.max_queue, self.retry_after_s = max_batch_size, max_queue, retry_after_s
        self.retry_after_max_s = retry_after_max_s
        self._recent_seconds: deque[float] = deque(maxlen=RECENT_GENERATIONS)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: deque[_Sequence] = deque()
        self._worker_token: object | None = None  # the running worker's; None once shut down
        self._depth = 0
        self._on_depth = on_depth
        self._on_completion, self._on_abandoned = on_completion, on_abandoned

    @property
    def depth(self) -> int:
        """Generations running plus waiting."""
        return self._depth

    def retry_after(self) -> int:
        """Seconds until the generations running and waiting now have drained, at the recent pace: their
        number x the mean time of the last RECENT_GENERATIONS finished generations / max_batch_size (rows
        decode together), rounded up, from 1 to ``retry_after_max_s``; ``retry_after_s`` before any finished.

        A constant would tell a client to come back in 2 s to a queue that takes minutes to clear, and
        its retries would be refused again and again."""
        with self._lock:
            if not self._recent_seconds:
                return self.retry_after_s
            mean = sum(self._recent_seconds) / len(self._recent_seconds)
            return min(max(math.ceil(self._depth * mean / self.max_batch_size), 1), self.retry_after_max_s)

    def _admit(self) -> None:
        with self._lock:
            full = self._depth >= self.max_batch_size + self.max_queue
            if not full:
                self._depth += 1
                self._on_depth(self._depth)
                return
        retry_after_s = self.retry_after()
        raise OverloadedError(
            f"{self.max_batch_size + self.max_queue} generations are running or waiting (LLM_MAX_BATCH_SIZE="
            f"{self.max_batch_size}, LLM_MAX_QUEUE={self.max_queue}); retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
        )

    def _release(self, _future: Future | None = None) -> None:
        with self._lock:
            self._depth -= 1
            self._on_depth(self._depth)

    def start(self) -> None:
        """Start the worker (again after :meth:`shutdown`: an app's lifespan may run more than once)."""
        with self._lock:
            if self._worker_token is None:
                self._worker_token = token = object()
                threading.Thread(target=self._run, args=(token,), name="generate", daemon=True).start()

    def _submit(self, seq: _Sequence) -> Future:
        self.start()
        self._admit()
        seq.future.add_done_callback(lambda future: self._observe(seq, future))
        seq.future.add_done_callback(self._release)
        if seq.params.temperature > 0:
            seq.processors = _decoding(seq.params, seq.prompt.model.model)["logits_processor"]
        with self._wake:
            self._waiting.append(seq)
            self._wake.notify()
        return seq.future

    def _observe(self, seq: _Sequence, future: Future) -> None:
        """In the worker, as the generation ends: the pace, and the outcome if its client has already left."""
        if future.cancelled():
            self._count(seq, None)  # the request was given up while it waited: it never ran
        elif future.exception() is None:
            completion = future.result()
            if completion.finish_reason != "cancelled":  # one cut short says nothing of the pace
                with self._lock:
                    self._recent_seconds.append(completion.seconds)
            if seq.cancel.is_set():
                self._count(seq, completion, delivered=False)

    def _count(self, seq: _Sequence, completion: Completion | None, delivered: bool = False) -> None:
        """Report the request's outcome, once whoever sees it first (the worker or the client's side)."""
        with self._lock:
            if seq.counted:
                return
            seq.counted = True
        if completion is None:
            self._on_abandoned()
        elif delivered and completion.finish_reason != "cancelled":
            self._on_completion(completion)
        else:
            self._on_completion(dataclasses.replace(completion, finish_reason="cancelled"))

    def _abandon(self, seq: _Sequence) -> None:
        """Its client left: stop the generation at its next token (or before it runs), and count it as cancelled
        if it has already ended (else the worker counts it as it ends)."""
        seq.cancel.set()
        seq.future.cancel()  # a waiting request never runs; a running one stops at its next token
        if seq.future.done() and not seq.future.cancelled() and seq.future.exception() is None:
            self._count(seq, seq.future.result(), delivered=False)

    def _joining(self, batch: _Batch | None) -> tuple[LoadedModel | None, list[_Sequence], list[_Sequence]]:
        """Under the lock: the waiting sequences that join now (on the batch's model, or the oldest's), and
        those whose client left while they waited (to be cancelled outside the lock: their callbacks take it)."""
        model = batch.model if batch is not None and batch.rows else None
        room = self.max_batch_size - (len(batch.rows) if model is not None else 0)
        joining: list[_Sequence] = []
        gone: list[_Sequence] = []
        for seq in list(self._waiting):
            if len(joining) >= room:
                break
            if seq.future.cancelled() or seq.cancel.is_set():
                self._waiting.remove(seq)
                gone.append(seq)
                continue
            if model is None:
                model = seq.prompt.model
            if seq.prompt.model is model:
                self._waiting.remove(seq)
                if seq.future.set_running_or_notify_cancel():
                    joining.append(seq)
        return model, joining, gone

    def _run(self, me: object) -> None:
        batch: _Batch | None = None
        while True:
            with self._wake:
                while (self._worker_token is me and not self._waiting
                       and (batch is None or not batch.rows)):
                    self._wake.wait()
                if self._worker_token is not me and (batch is None or not batch.rows):
                    return  # shut down, or replaced by a new worker: the running batch has ended
                if self._worker_token is me:
                    model, joining, gone = self._joining(batch)
                else:
                    model, joining, gone = batch.model, [], []  # shut down: the batch ends, no one joins
            for seq in gone:
                seq.future.cancel()  # its client left while it waited: it never ran
            if model is not None:
                if batch is None or not batch.rows or batch.model is not model:
                    batch = _Batch(model)
                self._work(batch, joining)
            if batch is not None and not batch.rows:
                batch = None  # hold no model between batches: a replaced one is freed once its requests end
            model = joining = gone = seq = None  # type: ignore[assignment]

    @staticmethod
    def _work(batch: _Batch, joining: list[_Sequence]) -> None:
        """Prefill the joining sequences, or else take one decoding step; a failure fails those it touched."""
        import torch

        with torch.inference_mode():
            if joining:
                started = time.perf_counter()
                for seq in joining:
                    seq.started = started
                try:
                    batch.join(joining)
                except Exception as error:  # noqa: BLE001 - any failure of the model fails its requests
                    batch.fail(joining, error)
            elif batch.rows:
                try:
                    batch.step()
                except Exception as error:  # noqa: BLE001 - any failure of the model fails its requests
                    batch.fail([], error)

    async def complete(self, prompt: Prompt, params: Params,
                       is_disconnected: Callable[[], Awaitable[bool]] | None = None) -> Completion:
        """Generate the whole completion; raises :class:`OverloadedError` at once when the queue is full.

        A server does not cancel a plain (not streamed) request whose client went away, so
        ``is_disconnected`` is polled while the generation runs: once it says so, the generation
        stops at its next token (``finish_reason`` "cancelled") and frees its row. It is asked once
        more when the answer is ready: an answer whose client has left is counted as cancelled.
        """
        cancel = threading.Event()
        seq = _Sequence(prompt, params, None, cancel, time.perf_counter())
        future = asyncio.wrap_future(self._submit(seq))
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
                if done:
                    break
                if is_disconnected is not None and not cancel.is_set() and await is_disconnected():
                    cancel.set()
            completion = future.result()  # a GenerationError, or CancelledError: it never ran
            gone = cancel.is_set() or (is_disconnected is not None and await is_disconnected())
        except asyncio.CancelledError:
            self._abandon(seq)  # the request's task was cancelled: stop at the next token
            raise
        if gone:
            self._abandon(seq)
        else:
            self._count(seq, completion, delivered=True)
        return completion

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
        streamer.prompt_seen = True  # the batch hands over new tokens only
        seq = _Sequence(prompt, params, streamer, cancel, admitted)
        self._submit(seq).add_done_callback(lambda _: put(_DONE))
        events = self._events(queue, seq)
        # Closed early, or dropped before it was ever iterated (its client left first): cancelled either way.
        weakref.finalize(events, self._abandon, seq)
        return events

    async def _events(self, queue: asyncio.Queue, seq: _Sequence) -> AsyncIterator[tuple[str, Any]]:
        try:
            while (item := await queue.get()) is not _DONE:
                yield "token", item
            completion = seq.future.result()
            self._count(seq, completion, delivered=True)  # counted as it is handed over: the client reads it next
            yield "done", completion
        finally:
            self._abandon(seq)

    def shutdown(self) -> None:
        """Give up what waits, let the running batch end in the worker, and let the worker go."""
        with self._wake:
            self._worker_token = None
            waiting, self._waiting = list(self._waiting), deque()
            self._wake.notify_all()
        for seq in waiting:
            seq.future.cancel()
