"""Schemas of the OpenAI-compatible API (``/v1/...``), and its error shape.

The request takes what OpenAI's Chat Completions API takes for a text conversation with one
answer, checked as strictly as the service's own ``POST /completion`` (same message rules and
``LLM_*`` limits). What it cannot honour is refused with a 400 naming the field, never silently
ignored: ``n`` other than 1, ``logprobs``, penalties other than 0, tools, functions, response
formats, and any field it does not know. Only fields that say who asks or how to file the request
away, and cannot change the answer (``user``, ``safety_identifier``, ``metadata``, ``store``), are
accepted and ignored.

Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``
(:func:`openai_error` turns the service's own shape into it), so the official clients raise the
exception a user expects: a 400 is ``BadRequestError`` with ``param``, a 404 ``NotFoundError``, a
429 ``RateLimitError``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from app.llm.config import Settings
from app.llm.schemas import (
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    MIN_TEMPERATURE,
    STOP_DESCRIPTION,
    Message,
    StopSequences,
    Usage,
    greedy_or_measurable,
    within_chars,
)

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default; the service's own /completion defaults to greedy (0)

# The refusals' `code`: OpenAI's names where it has one, else the validation error's type.
CODES = {"extra_forbidden": "unknown_parameter", "missing": "missing_required_parameter",
         "overloaded": "rate_limit_exceeded"}
UNKNOWN_PARAMETER = "unrecognized request argument: this service does not support it (see /docs)"


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for a status: what its API answers for a request-rate limit (429), a server
    that cannot answer (5xx), and refused input (every other 4xx)."""
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error(status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The service's error (status and shared body) as OpenAI answers it: refused input is a 400, not a 422.

    ``param`` is the first refused field (``messages[0].content``), ``code`` says why (``unknown_parameter``,
    ``context_length_exceeded``, ``model_not_found``, ``rate_limit_exceeded``, ``model_not_ready``, ...).
    """
    details = body.get("details") or []
    first = details[0] if details else {}
    field = first.get("field")
    param = field if field and field != "body" else None
    kind = body.get("error", "")
    message = body.get("message", "")
    if kind == "validation_error" and details:
        code = first.get("type") or "invalid_value"
        reasons = [f"{d['field']}: {UNKNOWN_PARAMETER if d.get('type') == 'extra_forbidden' else d['reason']}"
                   for d in details[:5]]
        message = "invalid request: " + "; ".join(reasons)
    else:
        code = kind
    status = 400 if status == 422 else status
    return status, {"error": {"message": message, "type": error_type(status), "param": param,
                              "code": CODES.get(code, code)}}


class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error`, `requests` (429) or `server_error`.")
    param: str | None = Field(description="The refused field, e.g. `messages[0].content`.")
    code: str | None = Field(description="Why: `unknown_parameter`, `context_length_exceeded`, `model_not_found`, "
                             "`rate_limit_exceeded`, `model_not_ready`, ...")


class OpenAIErrorResponse(BaseModel):
    error: OpenAIError


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    include_usage: bool = Field(default=False, description="Send a last chunk with `usage` and no choices.")


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


STOP_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS},
        {"type": "array", "maxItems": MAX_STOP_SEQUENCES,
         "items": {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS}},
        {"type": "null"},
    ],
    "description": f"A string or a list. {STOP_DESCRIPTION}",
}
Stop = Annotated[StopSequences | None, BeforeValidator(_one_or_many), WithJsonSchema(STOP_SCHEMA)]


def _refuse_unless(value: Any, accepted: Any, message: str) -> Any:
    """A before-validator's check: a value of the right type that the service cannot honour gets ``message``."""
    if value is not None and type(value) is type(accepted) and value != accepted:
        raise PydanticCustomError("unsupported_value", message)
    return value


def chat_request_model(settings: Settings) -> type[BaseModel]:
    """The request schema with this service's limits baked in (so they show in OpenAPI)."""
    max_chars, cap, max_messages = settings.max_input_chars, settings.max_new_tokens_cap, settings.max_messages
    default_new = settings.default_max_new_tokens

    class ChatCompletionRequest(BaseModel):
        model_config = ConfigDict(
            strict=True, extra="forbid", frozen=True,
            json_schema_extra={"examples": [
                {"model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                 "messages": [{"role": "user", "content": "What is a readiness probe?"}], "max_tokens": 32}
            ]},
        )

        model: str = Field(
            min_length=1, max_length=300,
            description="The id of the model serving now, as `GET /v1/models` lists it; any other id gets a 404 "
            "(`model_not_found`). After a swap (`POST /model`), the new model's id.",
        )
        messages: list[Message] = Field(
            min_length=1, max_length=max_messages,
            description=f"The conversation: 1 to {max_messages} messages (system, user, assistant; string content), "
            f"{max_chars} characters in all.",
        )
        max_completion_tokens: int | None = Field(
            default=None, ge=1, le=cap,
            description=f"At most {cap} (LLM_MAX_NEW_TOKENS_CAP); default {default_new}.",
        )
        max_tokens: int | None = Field(
            default=None, ge=1, le=cap,
            description="The older name of `max_completion_tokens`; give either, or both equal.",
        )
        temperature: float | None = Field(
            default=None, ge=0.0, le=2.0, allow_inf_nan=False,
            description=f"Default {DEFAULT_TEMPERATURE:g} (as OpenAI's); 0: greedy (deterministic); "
            f"{MIN_TEMPERATURE} to 2: sampling.",
        )
        top_p: float | None = Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False,
                                    description="Nucleus sampling; default 1.")
        seed: int | None = Field(
            default=None, ge=0, le=MAX_SEED,
            description="Sampling with the same model, messages, parameters and seed gives the same answer every time.",
        )
        stop: Stop = None
        stream: bool | None = Field(
            default=False, description="Answer with server-sent events: `data: {chat.completion.chunk}`, then "
            "`data: [DONE]`.",
        )
        stream_options: StreamOptions | None = Field(default=None, description="Only with `stream: true`.")
        n: Literal[1] | None = Field(default=None, description="Only 1: one choice per request.")
        frequency_penalty: float | None = Field(default=None, ge=0, le=0, description="Only 0 (no penalty).")
        presence_penalty: float | None = Field(default=None, ge=0, le=0, description="Only 0 (no penalty).")
        logprobs: Literal[False] | None = Field(default=None, description="Only false: no log probabilities.")
        user: str | None = Field(default=None, max_length=256, description="Accepted and ignored.")
        safety_identifier: str | None = Field(default=None, max_length=256, description="Accepted and ignored.")
        metadata: dict[str, str] | None = Field(default=None, max_length=16, description="Accepted and ignored.")
        store: bool | None = Field(default=None, description="Accepted and ignored: nothing is stored.")

        @field_validator("n", mode="before")
        @classmethod
        def _one_choice(cls, n: Any) -> Any:
            return _refuse_unless(n, 1, "only n=1 is supported: one choice per request")

        @field_validator("frequency_penalty", "presence_penalty", mode="before")
        @classmethod
        def _no_penalty(cls, value: Any) -> Any:
            value = _refuse_unless(value, 0, "penalties are not supported: only 0")
            return _refuse_unless(value, 0.0, "penalties are not supported: only 0")

        @field_validator("logprobs", mode="before")
        @classmethod
        def _no_logprobs(cls, logprobs: Any) -> Any:
            return _refuse_unless(logprobs, False, "log probabilities are not supported: only false")

        @field_validator("temperature")
        @classmethod
        def _greedy_or_measurable(cls, temperature: float | None) -> float | None:
            return None if temperature is None else greedy_or_measurable(temperature)

        @field_validator("messages")
        @classmethod
        def _input_not_too_long(cls, messages: list[Message]) -> list[Message]:
            return within_chars(messages, max_chars)

        @field_validator("max_tokens")
        @classmethod
        def _one_limit(cls, max_tokens: int | None, info: ValidationInfo) -> int | None:
            newer = info.data.get("max_completion_tokens")
            if max_tokens is not None and newer is not None and newer != max_tokens:
                raise PydanticCustomError(
                    "conflicting_value", "max_tokens ({old}) and max_completion_tokens ({new}) differ; give one",
                    {"old": max_tokens, "new": newer},
                )
            return max_tokens

        @field_validator("stream_options")
        @classmethod
        def _only_when_streaming(cls, options: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
            if options is not None and not info.data.get("stream"):
                raise PydanticCustomError("invalid_value", "stream_options is only allowed when stream is true")
            return options

        @property
        def max_new_tokens(self) -> int:
            return self.max_completion_tokens or self.max_tokens or default_new

        @property
        def include_usage(self) -> bool:
            return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    return ChatCompletionRequest


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"] = Field(
        description="`stop`: the model ended its answer or produced a stop string; `length`: max tokens reached.")
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str = Field(description="`chatcmpl-` and 32 hex digits.")
    object: Literal["chat.completion"]
    created: int = Field(description="Unix seconds.")
    model: str = Field(description="The model that produced the answer.")
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int = Field(description="When the model was loaded, in Unix seconds.")
    owned_by: str = Field(description="The hub organisation of a hub id, `local` for a folder under LLM_MODELS_DIR.")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard] = Field(description="The model serving now; empty while none serves.")


# One server-sent event of a streamed answer (documented, not validated: its body is text).
CHUNK_STREAM = {
    "type": "string",
    "description": "Server-sent events `data: <chat.completion.chunk JSON>`: the first delta carries the role, "
    "then `content` deltas, then one with `finish_reason`, then (with `stream_options.include_usage`) one with "
    "`usage` and no choices, then `data: [DONE]`. An error after the stream began is `data: {\"error\": ...}`.",
}
