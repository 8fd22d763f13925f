"""``made-serve``: load and validate the startup models, then run the app under uvicorn."""

import argparse
import logging
import logging.config
import os
import signal
import sys
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from service.contract.artifact import ArtifactError
from service.inference.models import prepare_startup
from service.settings import Settings
from service.transport.http_limits import limited_protocol
from service.transport.request_log import logging_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="made-serve", description="Serve a MADE artifact over HTTP (settings: MADE_*)."
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="artifact directory (MADE_MODEL_DIR)")
    source.add_argument(
        "--model-repository",
        type=Path,
        help="folder of models, one subfolder each, holding an artifact or numbered version "
        "folders (MADE_MODEL_REPOSITORY)",
    )
    parser.add_argument("--host", help="address to bind (MADE_HOST)")
    parser.add_argument("--port", type=int, help="port (MADE_PORT)")
    parser.add_argument("--workers", type=int, help="worker processes (MADE_WORKERS)")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in (
            ("model_dir", args.model),
            ("model_repository", args.model_repository),
            ("host", args.host),
            ("port", args.port),
            ("workers", args.workers),
        )
        if value is not None
    }
    settings = Settings(**overrides)
    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    served = settings.model_repository or settings.model_dir
    try:  # fail fast with one line, before uvicorn starts
        startup = prepare_startup(settings)
    except ArtifactError as exc:
        print(f"made-serve: cannot serve {served}: {exc}", file=sys.stderr)
        return 1
    # uvicorn drains on SIGTERM, then re-raises the signal; by then the drain is done, so exit 0
    # as orchestrators expect of a clean stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app: ASGIApp | str
    if settings.workers > 1:
        logging.getLogger("made_serve").warning(
            "%d workers: /metrics reports the one worker a scrape reaches; "
            "run one worker per container for complete metrics",
            settings.workers,
        )
        hand_to_workers(overrides)
        del startup  # each worker loads its own; this one only proved the artifacts sound
        app = "service.asgi:app"
    else:
        from service.transport.app import create_app

        app = create_app(settings, startup=startup)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        log_config=log_config,
        access_log=False,  # the app logs each request itself, as JSON
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        http=limited_protocol(settings),  # header size and read time bounds
    )
    return 0


def hand_to_workers(overrides: dict[str, object]) -> None:
    """Put the command line's settings in this process's environment as ``MADE_*`` variables."""
    # uvicorn's workers are spawned interpreters that import service.asgi:app, which reads
    # Settings from the environment they inherit: no other channel reaches them.
    os.environ.update({f"MADE_{key.upper()}": str(value) for key, value in overrides.items()})
