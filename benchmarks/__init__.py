"""Benchmarks of the workshop's services: ``python -m benchmarks.wine_service``."""
