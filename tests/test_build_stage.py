"""The image's build stage and the README's train and study commands, rehearsed without Docker.

Each runs in a fresh venv holding only its extras, installed from exactly the files the
Dockerfile's source stage copies, with torch from the wheel on disk. The build stage's own RUN
commands are read from the Dockerfile (so this follows the file) and the artifact they write must
be served by the runtime stage's venv; the README's commands are read from the README.
"""

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from model.data import load_dataset
from service.contract import artifact
from service.inference.engine import Engine
from tests.dockerfile import read_stages, runtime_stage
from tests.stage_venvs import (
    README,
    clean_env,
    copy_source_stage,
    foreign_distributions,
    made_serve,
    new_venv,
    run_checked,
    runtime_stage_venv,
)

pytestmark = pytest.mark.slow
# The image fetches the CPU wheel from TORCH_INDEX; here it is on disk, which constraints.txt pins.
TORCH_FROM_INDEX = re.compile(r'--index-url\s+"?\$\{TORCH_INDEX\}"?')
TORCH_ON_DISK = "-c constraints.txt"
# `tiny` runs the same code and imports as the README's `quick` in a fraction of its time (CI).
STUDY_PRESET = "tiny"


@dataclass(frozen=True)
class BuildStage:
    """What replaying the build stage left: its venv and the artifact the runtime stage copies."""

    venv: Path
    artifact: Path


def under(root: Path, command: str, tops: set[str]) -> str:
    """``command`` with the image's absolute paths under ``tops`` (e.g. /src) moved to ``root``."""
    pattern = rf"(?<![\w/.])/({'|'.join(map(re.escape, sorted(tops)))})(?=/|\b)"
    return re.sub(pattern, lambda match: f"{root}/{match.group(1)}", command)


def build_extras() -> list[str]:
    """The extras the build stage installs the project with, from its `pip install ".[...]"`."""
    (extras,) = re.findall(
        r"""["']?\.\[([\w,-]+)\]["']?""", " ".join(read_stages()["build"].runs())
    )
    return extras.split(",")


def readme_command(start: str) -> list[str]:
    """The first README line that begins with ``start``, its trailing comment dropped, as argv."""
    for line in README.read_text().splitlines():
        if line.startswith(start):
            return shlex.split(line, comments=True)
    raise AssertionError(f"README.md documents no command starting {start!r}")


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def build_stage(tmp_path_factory: pytest.TempPathFactory) -> BuildStage:
    """The build stage's RUN commands in order, in a new venv, with its ENV and WORKDIR."""
    stage = read_stages()["build"]
    root = tmp_path_factory.mktemp("build-stage")
    copy_source_stage(root)
    model_dir = runtime_stage().env()["MADE_MODEL_DIR"]
    (served,) = [
        sources for sources, destination in runtime_stage().copies() if destination == model_dir
    ]
    tops = {Path(path).parts[1] for path in (stage.workdir(), *served)}
    venv = new_venv(root / "venv")
    path = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
    env = clean_env(**stage.env(), PATH=path, VIRTUAL_ENV=str(venv))
    commands = stage.runs()
    assert sum(bool(TORCH_FROM_INDEX.search(command)) for command in commands) == 1, commands
    for command in commands:
        command = under(root, TORCH_FROM_INDEX.sub(TORCH_ON_DISK, command), tops)
        assert "${" not in command, f"a build argument this replay does not know: {command}"
        run_checked(["sh", "-c", command], cwd=Path(under(root, stage.workdir(), tops)), env=env)
    (artifact_dir,) = served
    return BuildStage(venv, Path(under(root, artifact_dir, tops)))


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_stage_venv(tmp_path_factory.getbasetemp())


def test_the_build_stage_installs_only_its_extras(build_stage: BuildStage) -> None:
    assert foreign_distributions(build_stage.venv, build_extras()) == []


def test_the_build_stage_artifact_is_served_by_the_runtime_venv(
    build_stage: BuildStage, serve_venv: Path, tmp_path: Path
) -> None:
    manifest = artifact.read_manifest(build_stage.artifact)
    assert manifest.product_normaliser is not None  # the image serves combination=product too
    rows = load_dataset(manifest.data.source).test[:4]
    with made_serve(serve_venv, build_stage.artifact, tmp_path / "serve.log") as (http, _):
        assert http.get("/readyz").status_code == 200
        answer = http.post("/v1/log-likelihood", json={"inputs": rows.astype(int).tolist()})
        assert answer.status_code == 200, answer.text
        expected = Engine.load(build_stage.artifact).log_likelihood(rows).log_likelihood
        np.testing.assert_allclose(answer.json()["log_likelihood"], expected, rtol=1e-5)


def test_the_readme_train_and_export_commands_need_only_the_train_extra(
    build_stage: BuildStage, tmp_path: Path
) -> None:
    assert build_extras() == ["train"], "the build stage's venv stands for the train extra here"
    train = readme_command("made-train --preset digits ")
    export = readme_command("made-export ")
    for argv in ([*train, "--epochs", "2"], export):  # two epochs: the build stage trained fully
        run_checked([build_stage.venv / "bin" / argv[0], *argv[1:]], cwd=tmp_path)
    manifest = artifact.read_manifest(tmp_path / option(export, "--out"))
    assert manifest.dim == 64 and manifest.product_normaliser is not None


def readme_study_install() -> list[str]:
    """The README's install line for the study, e.g. pip install -e '.[train,study]'."""
    (command,) = re.findall(r"`(pip install -e '\.\[[\w,]+\]')`", README.read_text())
    return shlex.split(command)


@pytest.fixture(scope="module")
def study_venv(tmp_path_factory: pytest.TempPathFactory, build_stage: BuildStage) -> Path:
    """The README's study install over a copy of the build stage's venv (torch and the train
    extra, already checked to hold nothing else), from a copy of the source stage: the same
    pinned wheels as a fresh venv, without unpacking torch again (CI's time)."""
    root = tmp_path_factory.mktemp("study-extras")
    source = copy_source_stage(root)
    # Without the bytecode the build stage's runs left: stale package folders would outlive the
    # reinstall and shadow the editable source.
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(build_stage.venv, root / "venv", symlinks=True, ignore=ignore)
    _, *args = readme_study_install()
    pip = [root / "venv" / "bin" / "python", "-m", "pip"]
    run_checked([*pip, *args, *TORCH_ON_DISK.split(), "--quiet"], source)
    return root / "venv"


def test_the_readme_study_command_needs_only_the_train_and_study_extras(
    study_venv: Path, tmp_path: Path
) -> None:
    extras = re.search(r"\[([\w,]+)\]", readme_study_install()[-1]).group(1).split(",")
    assert foreign_distributions(study_venv, extras) == []
    program, *args = readme_command("python -m model.study ")
    args[args.index("--preset") + 1] = STUDY_PRESET
    # --shipped names the Fashion-MNIST artifact, which the README trains separately (20 min).
    shipped = args.index("--shipped")
    del args[shipped : shipped + 2]
    run_checked([study_venv / "bin" / program, *args], cwd=tmp_path)
    out = tmp_path / option(args, "--out")
    assert (out / "study-digits.json").is_file() and (out / "study-digits.md").is_file()
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == [
        "digits-em-weights.png",
        "digits-first-k.png",
        "digits-nll-vs-masks.png",
        "digits-poe-vs-mixture.png",
    ]
