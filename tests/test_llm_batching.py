"""Continuous batching: sequences decoded together answer as they would alone, and keep their own settings.

The reference is one ``model.generate`` per prompt (:func:`app.llm.generation.generate`); the batch is
the service's :class:`~app.llm.generation.Generator`, fed prompts of different lengths at once and
while others run, so rows are left-padded, join a running batch and leave it at different steps.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tests.llm_fixtures import MODEL_A, MODEL_B, eventually, llm_models_dir, real_models_dir  # noqa: F401

PROMPTS = [
    "Hello, how are you?",
    "What is the capital of France?",
    "Write one sentence about the sea, please, and make it a long one with many words in it.",
    "Name three colours.",
    "Why is the sky blue? Answer briefly.",
    "Hi",
]


def _load(folder: Path):
    from app.llm.loader import load_model
    from app.llm.sources import resolve_source

    return load_model(resolve_source(folder.name, folder.parent), dtype="float32", offline=True)


def _prompts(model, texts: list[str], max_new_tokens: int):
    from app.llm.generation import encode_prompt

    return [encode_prompt(model, [{"role": "user", "content": t}], max_new_tokens, 2048) for t in texts]


async def _together(generator, prompts, params_list, stagger_s: float = 0.0, stream: bool = False):
    async def one(prompt, params, delay):
        await asyncio.sleep(delay)
        if not stream:
            return await generator.complete(prompt, params)
        text = ""
        async for kind, value in generator.stream(prompt, params):
            if kind == "token":
                text += value
            else:
                assert value.text == text, "the streamed pieces add up to the completion"
                return value
        raise AssertionError("the stream ended without its completion")

    pairs = enumerate(zip(prompts, params_list, strict=True))
    return await asyncio.gather(*(one(p, q, i * stagger_s) for i, (p, q) in pairs))


def _batched(model, texts, params_list, *, max_batch_size=8, stagger_s=0.0, stream=False):
    from app.llm.generation import Generator

    generator = Generator(max_batch_size=max_batch_size, max_queue=len(texts))
    generator.start()
    try:
        prompts = _prompts(model, texts, max(p.max_new_tokens for p in params_list))
        return asyncio.run(_together(generator, prompts, params_list, stagger_s, stream))
    finally:
        generator.shutdown()


def _alone(model, texts, params_list):
    from app.llm.generation import generate

    prompts = _prompts(model, texts, max(p.max_new_tokens for p in params_list))
    return [generate(prompt, params) for prompt, params in zip(prompts, params_list, strict=True)]


def _ids(model, completion) -> list[int]:
    return model.tokenizer(completion.text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def tiny(llm_models_dir: Path):  # noqa: F811
    return _load(llm_models_dir / MODEL_A)


@pytest.mark.parametrize("stagger_s", [0.0, 0.03], ids=["arriving-together", "joining-a-running-batch"])
def test_greedy_answers_in_a_batch_are_the_answers_alone(tiny, stagger_s: float) -> None:
    from app.llm.generation import Params

    lengths = [24, 5, 17, 1, 32, 9]  # rows leave the batch at different steps
    params = [Params(max_new_tokens=n) for n in lengths]
    alone = _alone(tiny, PROMPTS, params)
    batched = _batched(tiny, PROMPTS, params, max_batch_size=4, stagger_s=stagger_s, stream=True)
    assert [(c.text, c.completion_tokens, c.finish_reason) for c in batched] == [
        (c.text, c.completion_tokens, c.finish_reason) for c in alone]


def test_each_row_keeps_its_seed_temperature_and_stop_strings(tiny) -> None:
    from app.llm.generation import Params

    params = [Params(24, temperature=0.9, top_p=0.9, seed=7), Params(24, temperature=0.9, top_p=0.9, seed=7),
              Params(24, temperature=1.3, seed=8), Params(24), Params(24, stop=(" ", "a")), Params(24, seed=3)]
    first = _batched(tiny, PROMPTS[:1] * 2 + PROMPTS[1:5] , params, max_batch_size=3, stagger_s=0.02)
    again = _batched(tiny, PROMPTS[:1] * 2 + PROMPTS[1:5], params, max_batch_size=6)
    assert [c.text for c in first] == [c.text for c in again], "a seeded answer does not depend on its batch"
    assert first[0].text == first[1].text, "one seed, one answer, whatever row it decodes in"
    alone = _alone(tiny, PROMPTS[:1] * 2 + PROMPTS[1:5], params)
    assert [c.text for c in first] == [c.text for c in alone], "seeded sampling draws as generate() does"
    assert " " not in first[4].text and "a" not in first[4].text


def test_a_cancelled_row_leaves_and_the_others_finish(tiny) -> None:
    from app.llm.generation import Generator, Params

    generator = Generator(max_batch_size=4, max_queue=0)
    generator.start()
    prompts = _prompts(tiny, PROMPTS[:3], 64)

    async def scenario():
        streams = [generator.stream(p, Params(48)) for p in prompts]
        async def read(events, leave_after=None):
            pieces = 0
            async for kind, value in events:
                if kind == "done":
                    return value
                pieces += 1
                if leave_after is not None and pieces >= leave_after:
                    await events.aclose()  # the client left
                    return None
        return await asyncio.gather(read(streams[0], leave_after=2), read(streams[1]), read(streams[2]))

    try:
        left, *finished = asyncio.run(scenario())
        eventually(lambda: generator.depth == 0, "the cancelled row to leave the batch", timeout=30)
    finally:
        generator.shutdown()
    assert left is None
    assert [c.text for c in finished] == [c.text for c in _alone(tiny, PROMPTS[1:3], [Params(48)] * 2)]


def test_a_batch_runs_on_its_own_model_and_a_swap_drops_nothing(llm_models_dir: Path) -> None:  # noqa: F811
    from app.llm.generation import Generator, Params

    a, b = _load(llm_models_dir / MODEL_A), _load(llm_models_dir / MODEL_B)
    generator = Generator(max_batch_size=8, max_queue=8)
    generator.start()
    mixed = [(a, PROMPTS[0]), (b, PROMPTS[1]), (a, PROMPTS[2]), (b, PROMPTS[3])]
    prompts = [_prompts(model, [text], 16)[0] for model, text in mixed]
    try:
        done = asyncio.run(_together(generator, prompts, [Params(16)] * 4, stagger_s=0.01))
    finally:
        generator.shutdown()
    assert [c.model for c in done] == [m for m, _ in mixed]
    assert [c.text for c in done] == [_alone(m, [t], [Params(16)])[0].text for m, t in mixed]


def test_beyond_batch_plus_queue_a_request_is_refused_at_once(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.llm import generation
    from app.llm.errors import OverloadedError

    release, real_forward = threading.Event(), generation._forward

    def held(*args, **kwargs):
        assert release.wait(60)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(generation, "_forward", held)
    generator = generation.Generator(max_batch_size=2, max_queue=1, retry_after_s=5)
    prompt = _prompts(tiny, PROMPTS[:1], 4)[0]

    async def scenario():
        running = [asyncio.ensure_future(generator.complete(prompt, generation.Params(4))) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert generator.depth == 3
        with pytest.raises(OverloadedError) as refused:
            await generator.complete(prompt, generation.Params(4))
        assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "5"}
        assert "LLM_MAX_BATCH_SIZE=2" in str(refused.value) and "LLM_MAX_QUEUE=1" in str(refused.value)
        release.set()
        return await asyncio.gather(*running)

    try:
        assert [c.finish_reason for c in asyncio.run(scenario())] == ["length"] * 3
    finally:
        release.set()
        generator.shutdown()


def test_the_real_model_answers_in_a_batch_as_alone(real_models_dir: Path) -> None:  # noqa: F811
    from app.llm.generation import Params
    from app.llm.packaged_model import FLOAT32

    model = _load(real_models_dir / FLOAT32.name)
    params = [Params(max_new_tokens=n) for n in (32, 12, 32, 20, 32, 8)]
    alone = _alone(model, PROMPTS, params)
    batched = _batched(model, PROMPTS, params, max_batch_size=4, stagger_s=0.05)
    assert [c.text for c in batched] == [c.text for c in alone]
    assert "Paris" in batched[1].text


def test_every_request_is_counted_once_as_it_is_handed_over_or_given_up(tiny, monkeypatch: pytest.MonkeyPatch
                                                                         ) -> None:
    """A request that never ran reaches on_abandoned as its client leaves; a completed one on_completion as its
    answer is handed over (after its row, and so the depth, is freed: the client may still leave until then)."""
    from app.llm import generation

    release, real_forward = threading.Event(), generation._forward

    def held(*args, **kwargs):
        assert release.wait(60)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(generation, "_forward", held)
    seen: list[str] = []
    generator = generation.Generator(
        max_batch_size=1, max_queue=1, on_depth=lambda depth: seen.append(f"depth {depth}"),
        on_completion=lambda c: seen.append(f"completed {c.completion_tokens}"),
        on_abandoned=lambda: seen.append("abandoned"))
    prompt = _prompts(tiny, PROMPTS[:1], 3)[0]

    async def scenario():
        running = generator.stream(prompt, generation.Params(3))
        waiting = generator.stream(prompt, generation.Params(3))
        with pytest.raises(TimeoutError):  # its client left while it waited for the only row
            await asyncio.wait_for(anext(waiting), 0.2)
        release.set()
        return [value async for kind, value in running if kind == "done"]

    try:
        assert [c.completion_tokens for c in asyncio.run(scenario())] == [3]
        eventually(lambda: generator.depth == 0, "the batch to empty", timeout=30)
    finally:
        release.set()
        generator.shutdown()
    assert seen == ["depth 1", "depth 2", "abandoned", "depth 1", "depth 0", "completed 3"]


def test_the_generator_survives_a_restart(tiny) -> None:
    from app.llm.generation import Generator, Params

    generator = Generator(max_batch_size=2, max_queue=0)
    generator.start()
    generator.shutdown()
    generator.start()
    prompt = _prompts(tiny, PROMPTS[:1], 2)[0]
    try:
        assert asyncio.run(generator.complete(prompt, Params(2))).completion_tokens == 2
    finally:
        generator.shutdown()
