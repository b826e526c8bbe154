"""What the wine and LLM services share: the error shape (its exceptions, JSON and OpenAPI schema), the
liveness route, the request-body guard, the HTTP metrics, checksums, logging.

Both images carry the whole ``app`` package, so each service imports this instead of keeping a copy. It imports
neither service (a contract in ``pyproject.toml``): the services meet here and nowhere else.
"""
