"""Broken artifacts: ``made-serve`` refuses each with exit status 1 and one line naming it."""

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from model.onnx_graph import build_graph
from service import artifact
from service.cli import main
from service.masks import draw_pool


def manifest_of(art: Path) -> dict:
    return json.loads((art / artifact.MANIFEST_FILE).read_text())


def write_manifest(art: Path, manifest: dict) -> None:
    (art / artifact.MANIFEST_FILE).write_text(json.dumps(manifest))


def reseal(art: Path) -> None:
    """Record model.onnx's new sha256 and size, so only the tampering itself is wrong."""
    onnx_path = art / artifact.ONNX_FILE
    manifest = manifest_of(art)
    manifest["onnx"]["sha256"] = artifact.sha256_of(onnx_path)
    manifest["onnx"]["num_bytes"] = onnx_path.stat().st_size
    write_manifest(art, manifest)


def edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(art: Path) -> None:
        manifest = manifest_of(art)
        change(manifest)
        write_manifest(art, manifest)

    return apply


def edit_graph(change: Callable[[onnx.ModelProto], None]) -> Callable[[Path], None]:
    def apply(art: Path) -> None:
        model = onnx.load(str(art / artifact.ONNX_FILE))
        change(model)
        onnx.save(model, str(art / artifact.ONNX_FILE))
        reseal(art)

    return apply


def truncate(art: Path) -> None:
    path = art / artifact.ONNX_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    reseal(art)


def flip_a_byte(art: Path) -> None:
    path = art / artifact.ONNX_FILE
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def nan_weight(model: onnx.ModelProto) -> None:
    init = next(i for i in model.graph.initializer if i.name == "weight_0")
    value = numpy_helper.to_array(init).copy()
    value[0, 0] = np.nan
    init.CopyFrom(numpy_helper.from_array(value, init.name))


def smaller_graph(art: Path) -> None:
    """A valid graph of D=6 under a manifest that says D=8, with a matching sha256."""
    manifest = manifest_of(art)
    dim, hidden = 6, manifest["hidden_sizes"]
    k = len(manifest["members"])
    pool = draw_pool(k, dim, hidden, "random", seed=0)
    rng = np.random.default_rng(0)
    sizes = [dim, *hidden, dim]
    weights = [rng.normal(size=(o, i)).astype(np.float32) for i, o in pairwise(sizes)]
    biases = [np.zeros(o, np.float32) for o in sizes[1:]]
    direct = np.zeros((dim, dim), np.float32) if manifest["direct_connections"] else None
    onnx.save(build_graph(pool, weights, biases, direct), str(art / artifact.ONNX_FILE))
    reseal(art)


def relu_becomes_sigmoid(model: onnx.ModelProto) -> None:
    """Structurally valid, same weights, different function: only the parity check sees it."""
    node = next(n for n in model.graph.node if n.op_type == "Relu")
    node.op_type = "Sigmoid"


def swap_orderings(manifest: dict) -> None:
    ordering = manifest["members"][0]["ordering"]
    ordering[0], ordering[1] = ordering[1], ordering[0]


def remove(name: str) -> Callable[[Path], None]:
    return lambda art: (art / name).unlink()


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing directory": (lambda art: shutil.rmtree(art), "does not exist"),
    "missing manifest": (remove(artifact.MANIFEST_FILE), "manifest.json is missing"),
    "missing model.onnx": (remove(artifact.ONNX_FILE), "model.onnx is missing"),
    "manifest not JSON": (
        lambda art: (art / artifact.MANIFEST_FILE).write_text("{"),
        "not valid JSON",
    ),
    "manifest field missing": (edit_manifest(lambda m: m.pop("dim")), "dim"),
    "newer schema": (
        edit_manifest(lambda m: m.update(schema_version=artifact.SCHEMA_VERSION + 1)),
        "newer than this build reads",
    ),
    "weights not summing to 1": (
        edit_manifest(lambda m: m.update(mixture_weights=[0.5] * len(m["members"]))),
        "sum to 1",
    ),
    "sha256 mismatch": (flip_a_byte, "does not match manifest"),
    "truncated model.onnx": (truncate, "cannot be loaded"),
    "D mismatch": (smaller_graph, "model.onnx has D=6"),
    "orderings differ from graph": (
        edit_manifest(swap_orderings),
        "degrees do not match",
    ),
    "NaN weights": (edit_graph(nan_weight), "'weight_0' contains NaN"),
    "graph computes another function": (
        edit_graph(relu_becomes_sigmoid),
        "differ from its own weights",
    ),
}


@pytest.fixture
def broken(tmp_path: Path, tiny_artifact: Path, request) -> tuple[Path, str]:
    damage, expected = CASES[request.param]
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    damage(art)
    return art, expected


@pytest.mark.parametrize("broken", list(CASES), indirect=True)
def test_made_serve_refuses_a_broken_artifact_in_one_line(broken, capfd):
    art, expected = broken
    assert main(["--model", str(art), "--port", "1"]) == 1
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"made-serve: cannot serve {art}")
    assert expected in lines[0]


@pytest.mark.parametrize("broken", ["D mismatch", "NaN weights"], indirect=True)
def test_the_console_script_exits_non_zero(broken):
    art, expected = broken
    script = Path(sys.executable).with_name("made-serve")
    done = subprocess.run(
        [str(script), "--model", str(art), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and expected in done.stderr
    assert done.stdout == ""


def test_the_untouched_copy_loads(tmp_path, tiny_artifact):
    """The damage above is what fails, not the copying."""
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    reseal(art)
    from service.engine import Engine

    assert Engine.load(art).dim == manifest_of(art)["dim"]
