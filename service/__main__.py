"""`python -m service`: serve the bundle named by the flags and `GENSEN_*` variables.

With no options it serves models/gensen-base on 127.0.0.1:8080. `--help` lists every option.
"""

from __future__ import annotations

import logging
import os
import sys

from service.app import build_app
from service.auth import AuthConfigError
from service.bundle import BundleError, load_bundle
from service.logs import configure_logging
from service.server import serve
from service.settings import settings_from_cli

log = logging.getLogger("service")


def main(argv: list[str] | None = None) -> int:
    """Parse the settings, refuse a broken bundle or key file with a clear message, then serve."""
    settings = settings_from_cli(argv)
    # Requests are tokenised in parallel already (one call each); the tokenizer's own thread
    # pool would only take CPU from the encoder. Read when `tokenizers` first runs.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure_logging(settings.log_level)
    try:
        load_bundle(settings.bundle)
        app = build_app(settings)
    except BundleError as exc:
        log.error("cannot serve the bundle", extra={"reason": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AuthConfigError as exc:
        log.error("cannot use the API key digests", extra={"reason": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(settings, app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
