"""What the wine and LLM services share: the error shape, the request-body guard, logging.

Both images carry the whole ``app`` package, so each service imports this instead of keeping a copy.
"""
