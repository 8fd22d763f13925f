"""The page's files are served from the package, offline, and stay open when /v1 needs a key."""

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from service.transport.app import create_app


@pytest.fixture
def http(tiny_artifact: Path):
    with TestClient(create_app(Settings(model_dir=tiny_artifact, api_key="k"))) as client:
        yield client


def test_index_loads_only_its_own_files(http: TestClient) -> None:
    index = http.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    references = re.findall(r'(?:src|href)="([^"]+)"', index.text)
    assert "/static/app.js" in references and "/static/style.css" in references
    # Offline: nothing is fetched from another host.
    assert not [ref for ref in references if "//" in ref]
    for ref, kind in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        asset = http.get(ref)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.content


def test_page_is_open_while_v1_needs_the_key(http: TestClient) -> None:
    assert http.get("/").status_code == 200
    assert http.get("/v1/model").status_code == 401


@pytest.mark.parametrize("name", ["app.py", "..%2Fapp.py", "missing.js", "%2E%2E"])
def test_only_the_pages_files_are_served(http: TestClient, name: str) -> None:
    assert http.get(f"/static/{name}").status_code == 404
