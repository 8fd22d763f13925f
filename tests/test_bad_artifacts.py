"""Broken artifacts: `made-serve` refuses each with exit status 1 and one line naming it, and a
reload refuses each with 409 while the old model keeps serving."""

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from itertools import pairwise
from math import inf, nan
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import numpy_helper

from model.onnx_graph import build_graph
from service import cli
from service.contract import artifact
from service.contract.masks import draw_pool
from service.settings import Settings
from service.transport.app import create_app

ADMIN_KEY = "admin-key"


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


def nan_first_weight(manifest: dict) -> None:
    """json.dumps writes the NaN literal that Python's json.loads would read back."""
    manifest["mixture_weights"][0] = nan


def overflowing_alpha(art: Path) -> None:
    """1e999 is valid JSON syntax that Python's json.loads reads as infinity."""
    text = json.dumps({**manifest_of(art), "em_alpha": "OVERFLOW"})
    (art / artifact.MANIFEST_FILE).write_text(text.replace('"OVERFLOW"', "1e999"))


def swap_orderings(manifest: dict) -> None:
    ordering = manifest["members"][0]["ordering"]
    ordering[0], ordering[1] = ordering[1], ordering[0]


def with_normaliser(**change: float) -> Callable[[Path], None]:
    """A product-of-experts normaliser that is consistent, then ``change`` applied to it."""
    return edit_manifest(lambda m: m.update(product_normaliser={**NORMALISER, **change}))


NORMALISER = {
    "log_z": -1.0,
    "standard_error": 0.01,
    "upper_bound": -0.9,
    "confidence": 0.95,
    "num_samples": 2000,
    "effective_sample_size": 1500.0,
}


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
    # Numbers: finite, and consistent with each other and with the graph.
    "NaN mixture weight": (edit_manifest(nan_first_weight), "mixture_weights.0"),
    "Infinity literal": (
        edit_manifest(lambda m: m["metrics"]["valid"].update(uniform_mixture=inf)),
        "metrics.valid.uniform_mixture",
    ),
    "number too large for a float": (overflowing_alpha, "em_alpha"),
    "NaN where no type is declared": (
        edit_manifest(lambda m: m["training"].update(train_seconds=nan)),
        "training.train_seconds: NaN",
    ),
    "negative NLL of binary data": (
        edit_manifest(lambda m: m["metrics"]["test"]["members"].__setitem__(1, -3.5)),
        "metrics.test.members.1: -3.5 is negative",
    ),
    "negative weight": (
        edit_manifest(lambda m: m.update(mixture_weights=[0.0, 1.2, 0.3, -0.5])),
        "mixture_weights.3",
    ),
    "log Z NaN": (with_normaliser(log_z=nan), "product_normaliser.log_z"),
    "log Z above its upper bound": (with_normaliser(log_z=-0.5), "log_z -0.5 exceeds"),
    "upper bound above 0": (with_normaliser(upper_bound=0.5), "product_normaliser.upper_bound"),
    "standard error NaN": (
        with_normaliser(standard_error=nan),
        "product_normaliser.standard_error",
    ),
    "hidden sizes differ from graph": (
        edit_manifest(lambda m: m.update(hidden_sizes=[16, 17])),
        "hidden_sizes [16, 17]",
    ),
    "fewer hidden layers than the graph": (
        edit_manifest(lambda m: m.update(hidden_sizes=[16])),
        "hidden_sizes [16]",
    ),
    "direct connections differ from graph": (
        edit_manifest(lambda m: m.update(direct_connections=False)),
        "direct_connections",
    ),
    "metrics for another number of members": (
        edit_manifest(lambda m: m["metrics"]["test"]["members"].pop()),
        "metrics.test.members",
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
def test_made_serve_refuses_a_broken_artifact_in_one_line(broken, capfd, monkeypatch):
    art, expected = broken

    def serve(*_: object, **__: object) -> None:  # a failure, not a server that never returns
        raise AssertionError("made-serve went on to serve the broken artifact")

    monkeypatch.setattr(cli.uvicorn, "run", serve)
    assert cli.main(["--model", str(art), "--port", "1"]) == 1
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"made-serve: cannot serve {art}")
    assert expected in lines[0]


@pytest.mark.parametrize(
    "broken", ["D mismatch", "NaN weights", "NaN mixture weight"], indirect=True
)
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


@pytest.mark.parametrize("broken", list(CASES), indirect=True)
def test_reload_refuses_a_broken_artifact_and_the_old_one_keeps_serving(broken, tiny_artifact):
    """The same validation as at start-up: 409 naming the problem, nothing about the old model
    changes (answers, samples, readiness, reported sha256)."""
    art, expected = broken
    served = art.with_name("served")
    shutil.copytree(tiny_artifact, served)
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    likelihood = {"inputs": [[0, 1] * 4, [1] * 8], "per_member": True}
    sample = {"num_samples": 4, "seed": 0}
    with TestClient(create_app(Settings(model_dir=served, api_key=ADMIN_KEY))) as client:
        before = [
            client.get("/v1/model", headers=auth).json(),
            client.post("/v1/log-likelihood", json=likelihood, headers=auth).json(),
            client.post("/v1/sample", json=sample, headers=auth).json(),
        ]
        response = client.post("/v1/admin/reload", json={"model_dir": art.name}, headers=auth)
        assert response.status_code == 409, response.text
        detail = response.json()["detail"]
        assert detail.startswith("not reloaded, still serving the old model") and expected in detail
        assert client.get("/readyz").status_code == 200
        assert before == [
            client.get("/v1/model", headers=auth).json(),
            client.post("/v1/log-likelihood", json=likelihood, headers=auth).json(),
            client.post("/v1/sample", json=sample, headers=auth).json(),
        ]


def test_a_consistent_normaliser_loads(tmp_path, tiny_artifact):
    """The normaliser cases above fail on the one number they change."""
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    with_normaliser()(art)
    from service.inference.engine import Engine

    assert Engine.load(art).manifest.product_normaliser.upper_bound == NORMALISER["upper_bound"]


def test_weights_summing_to_1_within_the_tolerance_are_served(tmp_path, tiny_artifact):
    """Within the manifest's tolerance the weights are used normalised: sampling, which wants
    a sum within 1e-8, works."""
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    k = len(manifest_of(art)["members"])
    edit_manifest(lambda m: m.update(mixture_weights=[(1 + 5e-7) / k] * k))(art)
    from service.inference.engine import Engine

    samples = Engine.load(art).sample(4, np.random.default_rng(0))
    assert samples.shape == (4, manifest_of(art)["dim"])


def test_the_untouched_copy_loads(tmp_path, tiny_artifact):
    """The damage above is what fails, not the copying."""
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    reseal(art)
    from service.inference.engine import Engine

    assert Engine.load(art).dim == manifest_of(art)["dim"]
