"""Fresh virtualenvs that rehearse the Dockerfile's stages and the README's extras, no Docker."""

import functools
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.dockerfile import read_stages
from tests.servers import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The extras a user installs; `dev` is the test tooling, whose dependencies overlap uvicorn's.
USER_EXTRAS = ("train", "serve", "study")
INSTALL_TIMEOUT_S = 900.0  # pip reads local indexes and torch's wheel from disk; this is a bound
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the lead venv, the repository on the path, or MADE_* settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"} and not name.startswith("MADE_")
    }
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def copy_source_stage(into: Path) -> Path:
    """Copy what the Dockerfile's `source` stage copies (a directory's contents, as COPY does)."""
    for sources, destination in read_stages()["source"].copies():
        target = into / destination.lstrip("/")
        for name in sources:
            if (ROOT / name).is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(ROOT / name, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target)
    return into / "src"


def new_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", path], check=True, env=clean_env(), timeout=120)
    return path


def run_checked(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; fail the test with its output unless it exits 0."""
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env or clean_env(),
        cwd=cwd,
        timeout=INSTALL_TIMEOUT_S,
    )
    shown = " ".join(map(str, command))
    assert done.returncode == 0, f"{shown} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def run_in(venv: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [venv / "bin" / "python", "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=venv,
        timeout=60,
    )


def foreign_distributions(venv: Path, extras: list[str]) -> list[str]:
    """Distributions that the other user extras declare, ``extras`` do not, and ``venv`` holds."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {canonicalize_name(Requirement(text).name) for text in requirements}

    own = names(project["dependencies"]).union(*(names(declared[extra]) for extra in extras))
    others = set().union(*(names(declared[extra]) for extra in USER_EXTRAS)) - own
    listing = run_in(
        venv, "import importlib.metadata as m; print(*(d.name for d in m.distributions()))"
    )
    assert listing.returncode == 0, listing.stderr
    return sorted(others & {canonicalize_name(name) for name in listing.stdout.split()})


@functools.cache
def runtime_stage_venv(basetemp: Path) -> Path:
    """The runtime stage: a new virtualenv holding `pip install <source>[serve]`, nothing else.

    Cached per test session (its ``basetemp``), so every module serving from it shares one.
    """
    root = basetemp / "runtime-stage"
    root.mkdir()
    source = copy_source_stage(root)
    venv = new_venv(root / "venv")
    run_checked(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{source}[serve]"], root
    )
    return venv


@contextmanager
def made_serve(venv: Path, artifact: Path, log: Path) -> Iterator[tuple[httpx.Client, int]]:
    """README's `made-serve --model DIR --host --port` from ``venv``, ready; it must exit 0 on
    SIGTERM afterwards. Yields a client on it and its port."""
    port = free_port()
    command = [venv / "bin" / "made-serve", "--model", artifact]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=log.parent,
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log, START_DEADLINE_S)
        yield http, port
    finally:
        http.close()
        code = stop(process, signal.SIGTERM, STOP_DEADLINE_S)
    assert code == 0, log.read_text()
