"""`python -m service`: serve the bundle named by the flags and `GENSEN_*` variables.

With no options it serves models/gensen-base on 127.0.0.1:8080. `--help` lists every option.
With `--workers N` (N > 1, or `auto` on a GPU) this process runs the engine and N HTTP worker
processes share its port (`service.supervisor`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

from service.auth import ApiKeys, AuthConfigError
from service.bundle import BundleError, load_bundle
from service.engine import EngineError, available_cpus, cuda_usable
from service.logs import configure_logging
from service.settings import Settings, settings_from_cli

log = logging.getLogger("service")
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess folder


def main(argv: list[str] | None = None) -> int:
    """Parse the settings, refuse a broken bundle or key file with a clear message, then serve."""
    settings = settings_from_cli(argv)
    # Requests are tokenised in parallel already (one call each); the tokenizer's own thread
    # pool would only take CPU from the encoder. Read when `tokenizers` first runs.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure_logging(settings.log_level)
    try:
        load_bundle(settings.bundle)
        ApiKeys.load(settings.api_key_hashes, settings.api_key_file)
        return _serve(settings)
    except BundleError as exc:
        return _refuse("cannot serve the bundle", exc)
    except EngineError as exc:
        return _refuse("cannot start the engine", exc)
    except AuthConfigError as exc:
        return _refuse("cannot use the API key digests", exc)
    except OSError as exc:  # with workers: the port cannot be bound
        return _refuse("cannot listen", exc)


def worker_count(settings: Settings) -> int:
    """`settings.workers`, with `auto` resolved: one per CPU on a GPU (the front end is what
    limits there), one on the CPU (the encoder needs the cores)."""
    if settings.workers != "auto":
        return int(settings.workers)
    if cuda_usable(load_bundle(settings.bundle), settings.provider):
        return available_cpus()
    return 1


def _serve(settings: Settings) -> int:
    workers = worker_count(settings)
    # The rest is imported only now: with workers, every process must find prometheus-client's
    # multiprocess folder set before it first imports prometheus-client.
    if workers > 1:
        created = None  # a folder the user set is theirs: it is neither made nor removed here
        if not os.environ.get(MULTIPROC_DIR):
            created = os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="gensen-metrics-")
        from service import supervisor

        try:
            return supervisor.run(settings, workers)
        finally:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
    from service.app import build_app
    from service.server import serve

    serve(settings, build_app(settings))
    return 0


def _refuse(what: str, exc: Exception) -> int:
    log.error(what, extra={"reason": str(exc)})
    print(f"error: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
