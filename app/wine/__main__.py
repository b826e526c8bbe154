"""``python -m app.wine [--host HOST] [--port PORT]``: the wine service, served with its limits.

The one way to start it: uvicorn with the header limit, read deadlines, idle timeout and connection bound of
:mod:`app.common.server`, set by ``WINE_*`` variables like every other setting (:mod:`app.wine.config`).
"""

import sys

from app.common.server import main
from app.wine.config import get_settings

if __name__ == "__main__":
    sys.exit(main("app.wine.api:app", get_settings, prog="python -m app.wine"))
