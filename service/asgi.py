"""ASGI entry point for ``uvicorn service.asgi:app``: settings come from MADE_* variables."""

from service.transport.app import create_app

app = create_app()
