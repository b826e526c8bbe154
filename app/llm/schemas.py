"""Request and response schemas of the LLM API.

Validation is strict (no ``5`` for a string, no ``"5"`` for a number, no
unknown field), and the configured limits are part of the schema, so they show
in the OpenAPI document and every violation is a 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from app.common.schemas import ErrorResponse as SharedErrorResponse
from app.llm.config import Settings

Role = Literal["system", "user", "assistant"]
MIN_TEMPERATURE = 0.01
MAX_SEED = 2**63 - 1  # what a torch.Generator takes, and a signed 64-bit integer in any client
State = Literal["NOT_DEPLOYED", "LOADING", "RUNNING", "FAILED"]
MAX_STOP_SEQUENCES, MAX_STOP_CHARS = 4, 200
StopSequence = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
StopSequences = Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)]
STOP_DESCRIPTION = (f"Up to {MAX_STOP_SEQUENCES} strings of 1 to {MAX_STOP_CHARS} characters: generation ends once "
                    "the answer contains one, and the answer ends before it (`finish_reason` stop). A stream never "
                    "sends text that turns out to begin a stop string.")


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    role: Role = Field(description="Who speaks: `system`, `user` or `assistant`.")
    content: str = Field(min_length=1, description="The text; not empty, not only whitespace.")

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise PydanticCustomError("blank_content", "content is only whitespace")
        if "\x00" in content:
            raise PydanticCustomError("nul_character", "content contains a NUL character")
        return content


def greedy_or_measurable(temperature: float) -> float:
    """0 (greedy) or at least MIN_TEMPERATURE: dividing the logits by less overflows them to inf (sampling fails)."""
    if 0 < temperature < MIN_TEMPERATURE:
        raise PydanticCustomError("temperature_too_small", "temperature must be 0 (greedy) or at least {minimum}",
                                  {"minimum": MIN_TEMPERATURE})
    return temperature


def within_chars(messages: list[Message], max_chars: int) -> list[Message]:
    """Refuse messages that hold more than ``max_chars`` characters in all (LLM_MAX_INPUT_CHARS)."""
    total = sum(len(m.content) for m in messages)
    if total > max_chars:
        raise PydanticCustomError(
            "too_long",
            "messages hold {total} characters in all; at most {limit} are accepted (LLM_MAX_INPUT_CHARS)",
            {"total": total, "limit": max_chars},
        )
    return messages


def completion_request_model(settings: Settings) -> type[BaseModel]:
    """The request schema with this service's limits baked in (so they show in OpenAPI)."""
    max_chars, cap, max_messages = settings.max_input_chars, settings.max_new_tokens_cap, settings.max_messages

    class CompletionRequest(BaseModel):
        model_config = ConfigDict(
            strict=True, extra="forbid", frozen=True,
            json_schema_extra={"examples": [
                {"messages": [{"role": "user", "content": "What is a readiness probe?"}], "max_new_tokens": 32}
            ]},
        )

        messages: list[Message] = Field(
            min_length=1, max_length=max_messages,
            description=f"The conversation: 1 to {max_messages} messages, {max_chars} characters in all.",
        )
        max_new_tokens: int = Field(
            default=settings.default_max_new_tokens, ge=1, le=cap,
            description=f"At most {cap} (LLM_MAX_NEW_TOKENS_CAP).",
        )
        temperature: float = Field(
            default=0.0, ge=0.0, le=2.0, allow_inf_nan=False,
            description=f"0: greedy (deterministic); {MIN_TEMPERATURE} to 2: sampling.",
        )
        top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False, description="Nucleus sampling.")
        seed: int | None = Field(
            default=None, ge=0, le=MAX_SEED,
            description="Sampling (`temperature` > 0) with the same model, messages, parameters and seed gives "
            "the same completion every time, whatever else the service is doing; without one, sampling is "
            "random. Greedy decoding needs none. The answer repeats the seed.",
        )
        stop: StopSequences = Field(default=[], description=STOP_DESCRIPTION)
        stream: bool = Field(default=False, description="Answer with server-sent events: `token` events, then `done`.")

        @field_validator("temperature")
        @classmethod
        def _greedy_or_measurable(cls, temperature: float) -> float:
            return greedy_or_measurable(temperature)

        @field_validator("messages")
        @classmethod
        def _input_not_too_long(cls, messages: list[Message]) -> list[Message]:
            return within_chars(messages, max_chars)

    return CompletionRequest


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    model: str = Field(description="The model id that produced this answer.")
    revision: str | None
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "cancelled"]
    usage: Usage
    generation_seconds: float = Field(description="Time the model spent generating.")
    queued_seconds: float = Field(description="Time the request waited for a generation thread.")
    seed: int | None = Field(description="The seed the request gave (null: none was given).")


class SwapRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True,
                              json_schema_extra={"examples": [{"model_id": "smollm2-135m-instruct-bf16"}]})

    model_id: str = Field(min_length=1, max_length=300,
                          description="A folder name under LLM_MODELS_DIR, or a hub id `org/name`.")
    revision: str | None = Field(default=None, min_length=1, max_length=128,
                                 description="Hub branch, tag or commit (hub models only).")


class LastError(BaseModel):
    model_id: str
    message: str
    at: str


class StatusResponse(BaseModel):
    state: State
    ready: bool = Field(description="A model serves (also true in LOADING and FAILED when an older model serves).")
    serving_model_id: str | None
    loading_model_id: str | None
    last_error: LastError | None
    state_since: str
    entered_at: dict[str, str | None] = Field(description="When each state was last entered (ISO 8601, UTC).")
    loads: dict[str, int] = Field(description="Load attempts since start, by outcome.")


class ModelResponse(BaseModel):
    model_id: str
    revision: str | None
    source: Literal["local", "hub"]
    dtype: str
    parameters: int
    max_positions: int | None
    architecture: str
    loaded_at: str
    load_seconds: float = Field(description="Loading and the warm-up generation, in seconds.")
    warmup_seconds: float = Field(description="The one-token test generation at the end of the load.")
    card: dict[str, Any] | None = Field(
        default=None, description="The model folder's model_card.json (source, checksum, dtype, licence), if any.")


class ErrorResponse(SharedErrorResponse):
    """The shape both services answer errors with, plus the lifecycle ``state`` where it is the reason."""

    state: State | None = Field(default=None, description="The lifecycle state, when it is the reason.")
