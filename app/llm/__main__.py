"""``python -m app.llm [--host HOST] [--port PORT]``: the LLM chat service, served with its limits.

The one way to start it: uvicorn with the header limit, read deadlines, idle timeout and connection bound of
:mod:`app.common.server`, set by ``LLM_*`` variables like every other setting (:mod:`app.llm.config`).
"""

import sys

from app.common.server import main
from app.llm.config import get_settings

if __name__ == "__main__":
    sys.exit(main("app.llm.api:app", get_settings, prog="python -m app.llm"))
