"""Settings of the wine service, from environment variables prefixed ``WINE_``.

One class for the whole service (and its training and data tools), so every
knob is documented in one place and nothing reads ``os.environ`` ad hoc.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from platformdirs import user_cache_dir
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.common.server import ServerSettings

UCI_WINE_QUALITY_URL = "https://archive.ics.uci.edu/static/public/186/wine+quality.zip"


# The HTTP server's limits (header size, read deadlines, idle timeout, connections) are WINE_* too.
class Settings(BaseSettings, ServerSettings):
    model_config = SettingsConfigDict(env_prefix="WINE_", extra="ignore")

    environment: Literal["development", "production"] = "development"

    # Data (training and load tests).
    quality_data_dir: Path | None = Field(
        default=None,
        description="Folder holding winequality-red.csv and winequality-white.csv; "
        "when set, nothing is downloaded (checksums are still verified).",
    )
    quality_data_url: str = Field(default=UCI_WINE_QUALITY_URL, description="UCI archive to download.")
    cache_dir: Path = Field(
        default_factory=lambda: Path(user_cache_dir("ml-serving-workshop")) / "wine-quality",
        description="Where the downloaded CSVs are cached.",
    )
    download_timeout_s: float = Field(default=60.0, gt=0)

    # Serving.
    model_dir: Path = Field(default=Path("artifacts/wine"), description="Folder with model.onnx and model_card.json.")
    max_batch_size: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Larger request bodies get a 413.")
    inference_threads: int = Field(
        default=1, ge=1, description="onnxruntime intra-op threads; match the container's CPU limit."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(default=False, description="One JSON object per log line (for log shippers).")

    @model_validator(mode="after")
    def _refuse_unsafe_production_settings(self) -> Settings:
        if self.environment == "production" and not self.log_json:
            raise ValueError("WINE_LOG_JSON must be true when WINE_ENVIRONMENT=production (log shippers parse JSON)")
        # A full batch must fit in a body, or the batch limit is a lie.
        smallest_full_batch = self.max_batch_size * 250
        if self.max_body_bytes < smallest_full_batch:
            raise ValueError(
                f"WINE_MAX_BODY_BYTES={self.max_body_bytes} cannot hold a batch of WINE_MAX_BATCH_SIZE="
                f"{self.max_batch_size} wines (about {smallest_full_batch} bytes); raise it or lower the batch size"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
