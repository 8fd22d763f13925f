"""The dependency rule of the layout (README "Where things are"): the contract imports neither torch
nor serving code, and model/ reaches the service only through the contract."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVING = (
    "service.inference",
    "service.transport",
    "service.cli",
    "service.asgi",
    "service.client",
)


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "service":
                names.update(f"service.{alias.name}" for alias in node.names)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("service/contract"), ids=lambda p: p.name)
def test_the_contract_imports_neither_torch_nor_serving_code(path: Path) -> None:
    imported = imported_modules(path)
    assert not {name for name in imported if name.split(".")[0] in {"torch", "model"}}
    assert not {name for name in imported if name.startswith(SERVING)}
    assert not {name for name in imported if name.startswith(("fastapi", "starlette", "uvicorn"))}


HTTP = ("fastapi", "starlette", "uvicorn", "httpx", "service.transport", "service.cli")


@pytest.mark.parametrize("path", modules("service/inference"), ids=lambda p: p.name)
def test_the_inference_layer_knows_no_http(path: Path) -> None:
    """The data plane and what it runs on take arrays and raise domain errors; statuses and
    bodies are the transport's (service/transport/errors.py)."""
    assert not {name for name in imported_modules(path) if name.startswith(HTTP)}


@pytest.mark.parametrize("path", modules("model"), ids=lambda p: p.name)
def test_model_reaches_the_service_only_through_the_contract(path: Path) -> None:
    service = {name for name in imported_modules(path) if name.split(".")[0] == "service"}
    assert {name for name in service if not name.startswith("service.contract")} == set()


@pytest.mark.parametrize(
    "module",
    sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for folder in ("service", "model")
        for path in modules(folder)
    ),
)
def test_each_module_imports_on_its_own(module: str) -> None:
    """A fresh interpreter per module: an import circle fails whichever module it starts from."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
