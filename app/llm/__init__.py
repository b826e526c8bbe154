"""Transformers chat service with a swappable model (built in the LLM-serving issue)."""
