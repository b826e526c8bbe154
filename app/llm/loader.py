"""Loading a chat model with ``transformers``, safely and with errors a user can act on.

- ``trust_remote_code`` is always off: a model folder or hub repo cannot run its own Python here.
- A local folder loads with ``local_files_only``: nothing is fetched for it.
- A hub id is loaded only after a short reachability check of the hub. Without
  it, ``huggingface_hub`` retries an unreachable hub with backoff for about 45
  seconds a file before giving up. When the hub does not answer (or
  ``LLM_HUB_OFFLINE`` / ``HF_HUB_OFFLINE`` is set), the model is looked up in the
  local hub cache only, and if it is not there the load fails at once with a
  message that says how to load it from a folder instead.
- A tokenizer without a chat template cannot turn messages into a prompt: the
  load fails (and a swap ends FAILED), rather than every request later.
- Control tokens in messages are text: a message that spells ``<|im_end|>`` must not end
  its turn. At load, the tokenizer's control tokens (its special tokens) are listed and
  transformers' ``apply_chat_template(sanitize_control_tokens=True)`` is checked to encode
  every one of them, written in a message, as plain text; where it cannot (a tokenizer
  backend without that feature), requests that contain one are refused instead.
- Before a model is handed over, it renders a one-message conversation and
  generates one token. That proves the template and the weights work, and it
  pays the first forward pass's cost (the memory-mapped weights paged in:
  about 2 s for a 135M model here) during the load, not in the first
  client's request.

This module imports torch and transformers lazily, so the service starts (and
answers /health) before they are imported.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from app.llm.packaged_model import CARD
from app.llm.sources import ModelSource

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do (it becomes ``last_error``)."""


class HubUnreachableError(ModelLoadError):
    pass


class NoChatTemplateError(ModelLoadError):
    pass


@dataclass
class LoadedModel:
    """A tokenizer and model ready to generate, with what ``GET /model`` reports about them.

    ``tokenizer_lock`` serialises tokenizer calls: a Rust tokenizer used from two threads at
    once can fail with "Already borrowed" when its padding or truncation state is touched.
    """

    model_id: str
    source: str
    revision: str | None
    tokenizer: Any
    model: Any
    dtype: str
    parameters: int
    max_positions: int | None
    load_seconds: float
    warmup_seconds: float = 0.0
    card: dict[str, Any] | None = None  # a local folder's model_card.json: where the weights came from
    control_tokens: tuple[str, ...] = ()  # the tokenizer's special tokens, longest first
    control_tokens_as_text: bool = False  # the chat template encodes them, written in a message, as plain text
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id, "revision": self.revision, "source": self.source, "dtype": self.dtype,
            "parameters": self.parameters, "max_positions": self.max_positions,
            "architecture": type(self.model).__name__, "loaded_at": self.loaded_at.isoformat(),
            "load_seconds": round(self.load_seconds, 3), "warmup_seconds": round(self.warmup_seconds, 3),
            "card": self.card,
        }


def hub_offline(configured: bool) -> bool:
    from huggingface_hub import constants

    return configured or bool(constants.HF_HUB_OFFLINE)


def hub_reachable(model_id: str, timeout_s: float) -> str | None:
    """None when the hub answers at all (any HTTP status: a gated model's 401 still means reachable), else why not.

    ``model_id`` has passed the strict hub-id check, so it cannot steer the request elsewhere.
    """
    from huggingface_hub import constants

    try:
        httpx.head(f"{constants.ENDPOINT.rstrip('/')}/api/models/{model_id}", timeout=timeout_s,
                   follow_redirects=False)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    return None


def _dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def load_model(
    source: ModelSource, *, dtype: str = "float32", offline: bool = False, hub_timeout_s: float = 3.0
) -> LoadedModel:
    """Load ``source`` into memory, or raise :class:`ModelLoadError` (the only exception it raises)."""
    started = time.perf_counter()
    local_only, why = source.kind == "local", ""
    if source.kind == "hub":
        if hub_offline(offline):
            local_only, why = True, "offline mode is on (LLM_HUB_OFFLINE or HF_HUB_OFFLINE)"
        elif (problem := hub_reachable(source.model_id, hub_timeout_s)) is not None:
            local_only, why = True, f"the model hub is unreachable ({problem})"
    try:
        tokenizer, model = _from_pretrained(source, dtype=dtype, local_only=local_only)
    except ModelLoadError:
        raise
    except OSError as error:
        if source.kind == "hub" and local_only:
            raise HubUnreachableError(
                f"cannot load {source.model_id!r}: {why}, and it is not in the local hub cache. Download it where "
                f"there is network (`hf download {source.model_id} --local-dir <LLM_MODELS_DIR>/<name>`), then "
                "load it by its folder name under LLM_MODELS_DIR."
            ) from error
        raise ModelLoadError(f"cannot load {source.model_id!r}: {_first_line(error)}") from error
    except Exception as error:  # transformers raises many kinds; all of them mean "this model does not load"
        message = f"cannot load {source.model_id!r}: {type(error).__name__}: {_first_line(error)}"
        raise ModelLoadError(message) from error

    if not getattr(tokenizer, "chat_template", None):
        raise NoChatTemplateError(
            f"{source.model_id!r} has no chat template, so chat messages cannot be turned into a prompt; "
            "use an instruct/chat model, or add a chat_template to its tokenizer_config.json or chat_template.jinja"
        )
    warmup_seconds = _warm_up(source.model_id, tokenizer, model)
    tokens = control_tokens(tokenizer)
    config = model.config
    return LoadedModel(
        model_id=source.model_id, source=source.kind, revision=source.revision, tokenizer=tokenizer, model=model,
        dtype=str(model.dtype).removeprefix("torch."), parameters=sum(p.numel() for p in model.parameters()),
        max_positions=getattr(config, "max_position_embeddings", None),
        load_seconds=time.perf_counter() - started, warmup_seconds=warmup_seconds, card=_card(source),
        control_tokens=tokens, control_tokens_as_text=encodes_control_tokens_as_text(tokenizer, tokens),
    )


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special tokens (``all_special_tokens`` and every added token marked special), longest first
    (so that a token is named before a shorter one it contains)."""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or ())
    tokens |= {added.content for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()
               if added.special}
    return tuple(sorted((token for token in tokens if token), key=lambda token: (-len(token), token)))


def encodes_control_tokens_as_text(tokenizer: Any, tokens: tuple[str, ...]) -> bool:
    """Whether ``apply_chat_template(sanitize_control_tokens=True)`` encodes each of ``tokens``, written in a
    message, as plain text: the prompt then holds no more control-token ids than the template writes itself.

    False where the tokenizer's backend does not implement it (only the ``tokenizers`` backend does, in
    transformers 5.23) or where plain text encodes to a control token's id.
    """
    if not tokens:
        return True
    ids = {tokenizer.convert_tokens_to_ids(token) for token in tokens}

    def control_ids(content: str, sanitize: bool) -> int:
        encoded = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                sanitize_control_tokens=sanitize, return_dict=True)
        return sum(1 for token_id in encoded["input_ids"] if token_id in ids)

    try:
        return control_ids(" ".join(tokens), sanitize=True) == control_ids("x", sanitize=False)
    except (ValueError, TypeError, NotImplementedError) as error:
        log.info("the tokenizer cannot encode control tokens in messages as text (%s): messages holding one "
                 "are refused", _first_line(error))
        return False


def _card(source: ModelSource) -> dict[str, Any] | None:
    """The folder's model card, if it has a readable one (a missing or broken card never fails a load)."""
    if source.path is None:
        return None
    try:
        card = json.loads((source.path / CARD).read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def _warm_up(model_id: str, tokenizer: Any, model: Any) -> float:
    """Render a conversation and generate one token; raise :class:`ModelLoadError` if either fails."""
    import torch

    started = time.perf_counter()
    try:
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hello"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    except Exception as error:
        raise ModelLoadError(
            f"{model_id!r}: its chat template cannot render a one-message conversation: {_first_line(error)}"
        ) from error
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        with torch.inference_mode():
            model.generate(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], max_new_tokens=1,
                do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=pad,
            )
    except Exception as error:
        raise ModelLoadError(
            f"{model_id!r} loaded but failed a one-token test generation: {type(error).__name__}: "
            f"{_first_line(error)}"
        ) from error
    return time.perf_counter() - started


def _from_pretrained(source: ModelSource, *, dtype: str, local_only: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    common: dict[str, Any] = {"trust_remote_code": False, "local_files_only": local_only}
    if source.revision is not None:
        common["revision"] = source.revision
    tokenizer = AutoTokenizer.from_pretrained(source.location, **common)
    model = AutoModelForCausalLM.from_pretrained(source.location, dtype=_dtype(dtype), **common)
    model.eval()
    return tokenizer, model


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
