"""Settings of the LLM service, from environment variables prefixed ``LLM_``.

One class for the whole service, so every knob (which model, where models live,
how much a request may ask for, how many generations are batched) is documented
in one place and nothing reads ``os.environ`` ad hoc.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.common.server import ServerSettings
from app.llm.packaged_model import FLOAT32

# SmolLM2-135M-Instruct, as the folder `python -m app.llm.fetch_model` makes under LLM_MODELS_DIR: no hub needed.
DEFAULT_MODEL = FLOAT32.name


# The HTTP server's limits (header size, read deadlines, idle timeout, connections) are LLM_* too.
class Settings(BaseSettings, ServerSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_", extra="ignore", protected_namespaces=())

    environment: Literal["development", "production"] = "development"

    # Models.
    models_dir: Path = Field(
        default=Path("models"),
        description="Folder of local models: a model_id that names a folder in it loads from there, offline.",
    )
    default_model: str = Field(
        default=DEFAULT_MODEL,
        description="Model loaded in the background at start; empty: start NOT_DEPLOYED and wait for POST /model.",
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        default="auto",
        description="Weights' dtype: auto loads a model in the dtype it was saved in (a folder's config.json), so "
        "a float32 folder and a bfloat16 one differ; float32 forces full precision whatever a folder holds.",
    )
    hub_offline: bool = Field(
        default=False,
        description="Never contact the model hub (HF_HUB_OFFLINE=1 does the same): hub ids load from the cache only.",
    )
    hub_timeout_s: float = Field(
        default=3.0, gt=0, le=60,
        description="How long the hub may take to answer the reachability check before a load fails as offline.",
    )

    # Requests.
    max_new_tokens_cap: int = Field(default=256, ge=1, le=8192, description="Largest max_new_tokens a request may ask.")
    default_max_new_tokens: int = Field(default=64, ge=1)
    max_messages: int = Field(default=32, ge=1, le=1000)
    max_input_chars: int = Field(default=8000, ge=1, description="Total characters of all messages' content.")
    max_input_tokens: int = Field(default=2048, ge=1, description="Prompt tokens after the chat template.")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Larger request bodies get a 413.")

    # Batching and admission.
    max_batch_size: int = Field(
        default=8, ge=1, le=64,
        validation_alias=AliasChoices("max_batch_size", "llm_max_batch_size", "max_concurrency",
                                      "llm_max_concurrency"),
        description="Sequences decoded together in one batch (continuous batching: requests join and leave "
        "between steps). Each holds a KV cache of up to LLM_MAX_INPUT_TOKENS + LLM_MAX_NEW_TOKENS_CAP positions, "
        "so this bounds memory. LLM_MAX_CONCURRENCY is its old name, still read.",
    )
    max_queue: int = Field(
        default=8, ge=0, le=10_000,
        description="Requests waiting for a row of the batch; beyond LLM_MAX_BATCH_SIZE + this, a prompt 429.",
    )
    retry_after_s: int = Field(
        default=2, ge=1, description="Retry-After of a 503 (loading), and of a 429 (overloaded) until a generation "
        "has finished: from then on a 429's follows the queue and the recent generation times.")
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; match the container's CPU limit (default: torch's)."
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(default=False, description="One JSON object per log line (for log shippers).")

    @model_validator(mode="after")
    def _refuse_inconsistent_settings(self) -> Settings:
        if self.environment == "production" and not self.log_json:
            raise ValueError("LLM_LOG_JSON must be true when LLM_ENVIRONMENT=production (log shippers parse JSON)")
        if self.default_max_new_tokens > self.max_new_tokens_cap:
            raise ValueError(
                f"LLM_DEFAULT_MAX_NEW_TOKENS={self.default_max_new_tokens} is above "
                f"LLM_MAX_NEW_TOKENS_CAP={self.max_new_tokens_cap}; lower it or raise the cap"
            )
        # A JSON string may spend up to 6 bytes on a character (\uXXXX), plus the rest of the body.
        smallest_full_body = self.max_input_chars * 6 + 200 * self.max_messages + 1024
        if self.max_body_bytes < smallest_full_body:
            raise ValueError(
                f"LLM_MAX_BODY_BYTES={self.max_body_bytes} cannot hold LLM_MAX_INPUT_CHARS={self.max_input_chars} "
                f"characters in LLM_MAX_MESSAGES={self.max_messages} messages (up to {smallest_full_body} bytes); "
                "raise it or lower the limits"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
