"""The OpenAI-compatible API: ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/{id}``.

Beside the service's own ``POST /completion``, on the same lifecycle, generation pool, limits and
metrics, so the official ``openai`` client (and what is built on it) talks to the service as to
OpenAI: ``OpenAI(base_url="http://<host>:8000/v1", api_key="unused")``.

The ``model`` field must name the model serving now, as ``GET /v1/models`` lists it; another id
gets a 404 ``model_not_found``, as vLLM answers, rather than an answer from a model the client did
not ask for. During a swap the old id keeps working until the new model serves. Errors have
OpenAI's shape (``app.llm.openai_schemas.openai_error``, installed for ``/v1/`` by the app).
"""

# No `from __future__ import annotations` here: FastAPI must see the request class built inside
# build_router, not a string it cannot resolve.
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from app.llm.config import Settings
from app.llm.dependencies import Serving, ServingDep
from app.llm.errors import (
    GenerationError,
    InputTooLongError,
    LLMServiceError,
    OverloadedError,
)
from app.llm.generation import Completion, Params, encode_prompt
from app.llm.loader import LoadedModel
from app.llm.openai_schemas import (
    CHUNK_STREAM,
    DEFAULT_TEMPERATURE,
    ChatCompletion,
    ModelCard,
    ModelList,
    OpenAIErrorResponse,
    chat_request_model,
    openai_error,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OpenAIErrorResponse,
          "description": "Invalid input (`param` names the field), an unsupported parameter (`unknown_parameter`), or "
          "a prompt longer than the token limit (`context_length_exceeded`)."},
    404: {"model": OpenAIErrorResponse, "description": "`model` is not the model serving now (`model_not_found`)."},
    413: {"model": OpenAIErrorResponse, "description": "Body larger than LLM_MAX_BODY_BYTES."},
    415: {"model": OpenAIErrorResponse, "description": "Content type is not application/json."},
    429: {"model": OpenAIErrorResponse,
          "description": "Too many generations running and waiting (`rate_limit_exceeded`); see Retry-After."},
    503: {"model": OpenAIErrorResponse,
          "description": "No model serves (`model_not_ready`; Retry-After while the first model loads)."},
    # Also keeps FastAPI from documenting its 422: refused input is a 400 here.
    "default": {"model": OpenAIErrorResponse, "description": "Any other error, in the same shape."},
}


class ModelNotFoundError(LLMServiceError):
    """A ``model`` that is not the one serving now."""

    status_code = 404
    kind = "model_not_found"

    def __init__(self, requested: str, serving: str | None) -> None:
        now = f"the model serving now is {serving!r}" if serving else "no model serves now"
        reason = f"the model {requested!r} does not exist here: {now} (GET /v1/models)"
        super().__init__(reason[0].upper() + reason[1:], [{"field": "model", "reason": reason,
                                                           "type": "model_not_found"}])


def model_card(model: LoadedModel) -> dict[str, Any]:
    owner = model.model_id.split("/")[0] if model.source == "hub" else "local"
    return {"id": model.model_id, "object": "model", "created": int(model.loaded_at.timestamp()), "owned_by": owner}


def _finish_reason(completion: Completion) -> str:
    # "cancelled" reaches no one: its client has gone.
    return "length" if completion.finish_reason == "length" else "stop"


def _usage(completion: Completion) -> dict[str, int]:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def chat_completion_body(head: dict[str, Any], completion: Completion) -> dict[str, Any]:
    return {
        **head, "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                     "finish_reason": _finish_reason(completion), "logprobs": None}],
        "usage": _usage(completion),
    }


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"])
    ChatCompletionRequest = chat_request_model(settings)

    @router.get("/models", summary="The model serving now, as OpenAI lists models (empty while none serves)",
                response_model=ModelList)
    async def models(serving: ServingDep) -> dict[str, Any]:
        model = serving.manager.lifecycle.serving
        return {"object": "list", "data": [model_card(model)] if model is not None else []}

    @router.get("/models/{model_id:path}", summary="One model, if it is the one serving now", response_model=ModelCard,
                responses={404: ERRORS[404]})
    async def model(model_id: str, serving: ServingDep) -> dict[str, Any]:
        model = serving.manager.lifecycle.serving
        if model is None or model.model_id != model_id:
            raise ModelNotFoundError(model_id, model.model_id if model else None)
        return model_card(model)

    @router.post(
        "/chat/completions", summary="OpenAI's Chat Completions, answered by the model serving now",
        response_model=ChatCompletion, responses={
            **ERRORS, 200: {"content": {"text/event-stream": {"schema": CHUNK_STREAM}},
                            "description": "A `chat.completion`, or with `stream: true` server-sent chunks."},
        },
    )
    async def chat_completions(
        request: ChatCompletionRequest, serving: ServingDep, http: Request  # type: ignore[valid-type]
    ) -> Any:
        metrics = serving.metrics
        model = serving.model_for_completion()
        if request.model != model.model_id:
            metrics.completion("invalid")
            raise ModelNotFoundError(request.model, model.model_id)
        messages = [message.model_dump() for message in request.messages]
        try:
            prompt = encode_prompt(model, messages, request.max_new_tokens, settings.max_input_tokens)
        except InputTooLongError as error:  # OpenAI's code for it, which clients look for
            raise InputTooLongError(error.message, [{**d, "type": "context_length_exceeded"} for d in error.details]
                                    ) from error
        temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
        params = Params(request.max_new_tokens, temperature, request.top_p or 1.0, request.seed,
                        tuple(request.stop or ()))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model.model_id}
        try:
            if request.stream:
                events = serving.generator.stream(prompt, params)
                return EventSourceResponse(_chunks(serving, head, events, request.include_usage), ping=15)
            result = await serving.generator.complete(prompt, params, is_disconnected=http.is_disconnected)
        except OverloadedError:
            metrics.completion("overloaded")
            raise
        except GenerationError:
            metrics.completion("error")
            raise
        return chat_completion_body(head, result)

    return router


async def _chunks(serving: Serving, head: dict[str, Any], events: AsyncIterator[tuple[str, Any]],
                  include_usage: bool) -> AsyncIterator[dict[str, str]]:
    """The stream as the ``openai`` client reads it: a role delta, content deltas, the finish reason,
    the usage (when asked: then every chunk has a ``usage``, null but in the last), ``[DONE]``."""
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, str]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"data": json.dumps({**head, "object": "chat.completion.chunk", "choices": [choice], **extra})}

    # The role goes with the first event, not before it: the events' generator must have started, so
    # that closing it (the client left) stops the generation.
    role_sent = False
    async with aclosing(events):  # type: ignore[type-var]
        try:
            async for kind, value in events:
                if not role_sent:
                    role_sent = True
                    yield chunk({"role": "assistant", "content": ""})
                if kind == "token":
                    yield chunk({"content": value})
                    continue
                yield chunk({}, _finish_reason(value))
                if include_usage:
                    yield {"data": json.dumps({**head, "object": "chat.completion.chunk", "choices": [],
                                               "usage": _usage(value)})}
        except LLMServiceError as error:
            serving.metrics.completion("error")
            yield {"data": json.dumps(openai_error(error.status_code, error.body())[1])}
    yield {"data": "[DONE]"}
