"""A tiny chat model built offline, for tests, CI and classrooms without a model hub.

No hub is reachable from CI, and a real chat model is hundreds of megabytes. So
the tests build one here: a byte-level BPE tokenizer trained with ``tokenizers``
on a small built-in corpus, a chat template, and a randomly initialised Llama
of about a million parameters, both written with ``save_pretrained``. The
service loads the folder exactly as it loads any model (``AutoTokenizer`` and
``AutoModelForCausalLM``), so the code path under test is the real one; only
the answers are gibberish.

``python -m workshop tiny-llm FOLDER [--seed N] [--name NAME] [--broken no-chat-template|corrupt-weights]``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

# A ChatML template, the format SmolLM2 and many instruct models use.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TOKEN_ROLES = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}

CORPUS = """\
A model is served behind an HTTP API so that other programs can use it.
The service loads the model once, then answers many requests.
Readiness says whether the service can answer; liveness says whether the process is alive.
Prometheus scrapes metrics, and Grafana draws them on a dashboard.
A swap loads the new model in the background while the old model keeps serving.
If the new model fails to load, the old one still answers and the state says FAILED.
Wine quality is scored from zero to ten by tasters.
Acidity, sugar, sulphates and alcohol change how a wine tastes.
Tokens are pieces of words; a tokenizer turns text into tokens and back.
The assistant answers the user politely and briefly.
Hello! How can I help you today?
Kubernetes restarts a container whose liveness probe fails.
A startup probe gives a slow model time to load before liveness is checked.
Latency is the time a request takes; throughput is how many requests are served per second.
"""

# SmolLM2-135M-Instruct's shape (its config.json): 135M parameters, 540 MB in float32.
SMOLLM2_135M_SHAPE = {
    "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192, "head_dim": 64,
}

BrokenKind = Literal["no-chat-template", "corrupt-weights"]
BROKEN_KINDS: tuple[BrokenKind, ...] = ("no-chat-template", "corrupt-weights")


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Repeated so that merges have counts to work with; the trainer is deterministic for a given corpus.
    tokenizer.train_from_iterator([line for _ in range(20) for line in CORPUS.splitlines()], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=512, chat_template=CHAT_TEMPLATE, **TOKEN_ROLES
    )


def build_tiny_chat_model(
    folder: Path | str,
    *,
    seed: int = 0,
    vocab_size: int = 1024,
    name: str = "tiny-chat",
    hidden_size: int = 128,
    layers: int = 4,
    shape: dict[str, int] | None = None,
) -> Path:
    """Write a tokenizer (with a chat template) and a random ~1M-parameter Llama into ``folder``.

    Deterministic: the same arguments give the same weights. Different seeds give different
    models, which is how the swap tests tell two models apart. ``name`` is recorded in the
    config (``name_or_path`` is overwritten on load, so it goes in ``tiny_model_name``).

    ``shape`` overrides Llama config fields (e.g. :data:`SMOLLM2_135M_SHAPE`) to build a random
    stand-in of a real model's size, for timing loads where the real model cannot be downloaded.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    for key, value in (shape or {}).items():
        setattr(config, key, value)
    config.tiny_model_name = name
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.do_sample = False
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def break_model(folder: Path | str, kind: BrokenKind) -> Path:
    """Damage a model folder on purpose, to make a swap fail.

    ``no-chat-template``: the tokenizer loses its chat template (a base model, not a chat model).
    ``corrupt-weights``: the safetensors file is truncated to garbage.
    """
    folder = Path(folder)
    if kind == "no-chat-template":
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config.pop("chat_template", None)
        config_path.write_text(json.dumps(config, indent=2))
    elif kind == "corrupt-weights":
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            raise FileNotFoundError(f"no *.safetensors file in {folder} to corrupt")
        for path in weights:
            path.write_bytes(b"this is not a safetensors file")
    else:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(BROKEN_KINDS)}")
    return folder


def build_broken_model(folder: Path | str, kind: BrokenKind = "no-chat-template", *, seed: int = 0) -> Path:
    """A tiny model folder that fails to load as a chat model (see :func:`break_model`)."""
    build_tiny_chat_model(folder, seed=seed, name=f"broken-{kind}")
    return break_model(folder, kind)
