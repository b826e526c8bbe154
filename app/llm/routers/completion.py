"""``POST /completion``: a chat completion, whole or streamed as server-sent events.

The handler takes the model serving *now* and keeps it for the whole request:
a swap that lands mid-generation changes what the next request gets, not this
one. Each response names the model that produced it.
"""

# No `from __future__ import annotations` here: FastAPI must see the CompletionRequest class
# built inside build_router, not a string it cannot resolve.
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from app.llm.config import Settings
from app.llm.dependencies import Serving, ServingDep
from app.llm.errors import GenerationError, LLMServiceError, OverloadedError, error_body
from app.llm.generation import Completion, Params, encode_prompt
from app.llm.schemas import CompletionResponse, ErrorResponse, completion_request_model

ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid messages, or a limit exceeded; `details` say which."},
    413: {"model": ErrorResponse, "description": "Body larger than LLM_MAX_BODY_BYTES."},
    415: {"model": ErrorResponse, "description": "Content type is not application/json."},
    429: {"model": ErrorResponse, "description": "Too many generations running and waiting; see Retry-After."},
    503: {"model": ErrorResponse, "description": "No model serves; `state` says why (Retry-After while LOADING)."},
}

# One server-sent event: `token` carries {"text": ...}, `done` the JSON answer, `error` the error shape.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["token", "done", "error"]},
        "data": {"type": "string", "description": "JSON text"},
    },
    "required": ["event", "data"],
}


def completion_body(completion: Completion) -> dict[str, Any]:
    return {
        "model": completion.model.model_id,
        "revision": completion.model.revision,
        "message": {"role": "assistant", "content": completion.text},
        "finish_reason": completion.finish_reason,
        "usage": {
            "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
        "generation_seconds": round(completion.seconds, 6),
        "queued_seconds": round(completion.queued_seconds, 6),
        "seed": completion.seed,
    }


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["completion"], responses=ERRORS)
    CompletionRequest = completion_request_model(settings)

    @router.post(
        "/completion", summary="Answer a conversation with the model serving now", response_model=CompletionResponse,
        responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                         "description": "JSON, or with `stream: true` events `token` ({text}) then `done` "
                         "(the JSON answer) or `error`."}},
    )
    async def completion(
        request: CompletionRequest, serving: ServingDep, http: Request  # type: ignore[valid-type]
    ) -> Any:
        metrics = serving.metrics
        model = serving.model_for_completion()
        messages = [message.model_dump() for message in request.messages]
        prompt = encode_prompt(model, messages, request.max_new_tokens, settings.max_input_tokens)
        params = Params(request.max_new_tokens, request.temperature, request.top_p, request.seed,
                        tuple(request.stop))
        try:
            if request.stream:
                return EventSourceResponse(_events(serving, serving.generator.stream(prompt, params)), ping=15)
            result = await serving.generator.complete(prompt, params, is_disconnected=http.is_disconnected)
        except OverloadedError:
            metrics.completion("overloaded")
            raise
        except GenerationError:
            metrics.completion("error")
            raise
        return completion_body(result)

    return router


async def _events(serving: Serving, events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[dict[str, str]]:
    async with aclosing(events):  # type: ignore[type-var]  # closed with the response: the client left, it stops
        try:
            async for kind, value in events:
                if kind == "token":
                    yield {"event": "token", "data": json.dumps({"text": value})}
                else:
                    yield {"event": "done", "data": json.dumps(completion_body(value))}
        except LLMServiceError as error:
            serving.metrics.completion("error")
            yield {"event": "error", "data": json.dumps(error_body(error.kind, error.message))}
