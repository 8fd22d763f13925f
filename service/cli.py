"""``made-serve``: validate the artifact, then run the app under uvicorn."""

import argparse
import logging
import logging.config
import signal
import sys
from pathlib import Path

import uvicorn

from service.artifact import ArtifactError
from service.engine import Engine
from service.http_limits import limited_protocol
from service.request_log import logging_config
from service.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="made-serve", description="Serve a MADE artifact over HTTP (settings: MADE_*)."
    )
    parser.add_argument("--model", type=Path, help="artifact directory (MADE_MODEL_DIR)")
    parser.add_argument("--host", help="address to bind (MADE_HOST)")
    parser.add_argument("--port", type=int, help="port (MADE_PORT)")
    parser.add_argument("--workers", type=int, help="worker processes (MADE_WORKERS)")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in (
            ("model_dir", args.model),
            ("host", args.host),
            ("port", args.port),
            ("workers", args.workers),
        )
        if value is not None
    }
    settings = Settings(**overrides)
    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    try:  # fail fast with one line, before uvicorn starts
        engine = Engine.load(settings.model_dir, settings.onnx_threads())
    except ArtifactError as exc:
        print(f"made-serve: cannot serve {settings.model_dir}: {exc}", file=sys.stderr)
        return 1
    # uvicorn drains on SIGTERM, then re-raises the signal; by then the drain is done, so exit 0
    # as orchestrators expect of a clean stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if settings.workers > 1:
        # Workers are separate processes that build their own app from the environment.
        import os

        logging.getLogger("made_serve").warning(
            "%d workers: /metrics reports the one worker a scrape reaches; "
            "run one worker per container for complete metrics",
            settings.workers,
        )
        for key, value in overrides.items():
            os.environ[f"MADE_{key.upper()}"] = str(value)
        del engine  # each worker loads its own; this one only proved the artifact sound
        uvicorn.run(
            "service.asgi:app",
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
    from service.app import create_app

    uvicorn.run(
        create_app(settings, engine=engine),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=log_config,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        http=limited_protocol(settings),
    )
    return 0
