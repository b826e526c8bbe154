"""The chat service: a HuggingFace ``transformers`` model behind FastAPI, swappable while it serves.

``python -m app.llm`` (:mod:`app.llm.__main__`); settings are ``LLM_*`` variables (:mod:`app.llm.config`). The modules,
from the bottom up: :mod:`~app.llm.lifecycle` (the pure state machine), :mod:`~app.llm.sources`
(which model ids are allowed), :mod:`~app.llm.loader` (transformers, offline-aware),
:mod:`~app.llm.generation` (bounded, off the event loop), :mod:`~app.llm.manager` (background swaps),
:mod:`~app.llm.metrics`, and the routers.
"""
