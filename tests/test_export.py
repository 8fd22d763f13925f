"""The exported artifact reproduces torch, normalises, is small, and round-trips its manifest."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model import export as export_module
from model.export import ExportError, check_parity, export, onnx_model
from model.onnx_graph import build_graph
from service import artifact
from service.masks import draw_pool
from service.mixture import mixture_log_prob
from tests.test_made import all_binary


def run_onnx(directory, rows):
    session = ort.InferenceSession(str(directory / artifact.ONNX_FILE))
    return session.run(None, {artifact.INPUT_X: rows})


def test_onnx_matches_torch_and_normalises(tiny_trained, tiny_artifact):
    manifest = artifact.read_manifest(tiny_artifact)
    rows = all_binary(manifest.dim)
    log_prob, logits = run_onnx(tiny_artifact, rows)
    assert log_prob.shape == (len(rows), manifest.num_members)
    assert logits.shape == (len(rows), manifest.num_members, manifest.dim)
    with torch.no_grad():
        torch_lp = tiny_trained.model.member_log_probs(torch.as_tensor(rows)).numpy()
        torch_logits = torch.stack(
            [tiny_trained.model(torch.as_tensor(rows), k) for k in range(manifest.num_members)], 1
        ).numpy()
    np.testing.assert_allclose(log_prob, torch_lp, atol=1e-4)
    np.testing.assert_allclose(logits, torch_logits, atol=1e-4)
    np.testing.assert_allclose(np.exp(log_prob.astype(np.float64)).sum(axis=0), 1.0, atol=1e-4)
    k = manifest.num_members
    for weights in (np.full(k, 1 / k), np.array(manifest.mixture_weights)):
        assert abs(np.exp(mixture_log_prob(log_prob, weights)).sum() - 1) < 1e-4


def float64_log_prob(rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """[B, K] sum_d log p(x_d | x_<d) from the graph's own [B, K, D] logits, in float64."""
    signed = (2 * rows[:, None, :].astype(np.float64) - 1) * logits.astype(np.float64)
    return -np.logaddexp(0, -signed).sum(axis=2)


@pytest.mark.parametrize("bias", [80.0, -80.0])
def test_extreme_logits_give_exact_log_probabilities(tiny_trained, bias):
    """Biases of +-80 push every logit into saturation, where a naive BCE export overflows and
    a plain log of sigmoid underflows."""
    model = onnx_model(tiny_trained)
    for init in model.graph.initializer:
        if init.name.startswith("bias_"):
            values = np.frombuffer(init.raw_data, dtype=np.float32) * 0 + bias
            init.raw_data = values.astype(np.float32).tobytes()
    session = ort.InferenceSession(model.SerializeToString())
    rows = all_binary(tiny_trained.model.dim)
    log_prob, logits = session.run(None, {artifact.INPUT_X: rows})
    assert np.isfinite(log_prob).all()
    np.testing.assert_allclose(log_prob, float64_log_prob(rows, logits), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("scale", [0.001, 3.0])
@pytest.mark.parametrize("dim", [67, 130, 784])
def test_log_probabilities_match_float64_for_any_chunking(dim, scale):
    """The graph sums logs of products over chunks of up to 64 dimensions (a prime D gets chunks
    of one). Logits near 0 make every factor about 1/2, the smallest; large ones saturate."""
    pool = draw_pool(3, dim, [40], "random", seed=dim)
    rng = np.random.default_rng(dim)
    weights = [rng.normal(0, scale, (40, dim)), rng.normal(0, scale, (dim, 40))]
    biases = [rng.normal(0, scale, 40), rng.normal(0, scale, dim)]
    graph = build_graph(pool, weights, biases, rng.normal(0, scale, (dim, dim)))
    session = ort.InferenceSession(graph.SerializeToString())
    rows = (rng.random((16, dim)) < 0.5).astype(np.float32)
    log_prob, logits = session.run(None, {artifact.INPUT_X: rows})
    np.testing.assert_allclose(log_prob, float64_log_prob(rows, logits), rtol=1e-5, atol=1e-3)


def test_file_is_not_k_dense_masks(tmp_path, tiny_data_dir):
    from tests.conftest import train_tiny

    trained = train_tiny(tmp_path / "run", tiny_data_dir, hidden_sizes=[64], num_masks=16, epochs=1)
    manifest, _ = export(trained, tmp_path / "art")
    made = trained.model
    weight_bytes = 4 * sum(p.numel() for p in made.parameters())
    k, d, h = made.num_members, made.dim, 64
    assert manifest.onnx.num_bytes <= 1.3 * weight_bytes + 8 * k * (d + h) + 4096


def test_manifest_round_trip(tiny_artifact):
    manifest = artifact.read_manifest(tiny_artifact)
    assert artifact.Manifest.model_validate_json(manifest.model_dump_json()) == manifest
    assert manifest.onnx.sha256 == artifact.sha256_of(tiny_artifact / artifact.ONNX_FILE)
    assert abs(sum(manifest.mixture_weights) - 1) < 1e-9
    assert [sorted(m.ordering) for m in manifest.members] == [list(range(manifest.dim))] * 4
    assert artifact.verify_onnx_file(tiny_artifact, manifest).is_file()


def test_export_refuses_a_graph_that_disagrees_with_torch(tiny_trained, tmp_path, monkeypatch):
    def broken(trained):
        model = onnx_model(trained)
        bias = next(i for i in model.graph.initializer if i.name == "bias_2")
        values = np.frombuffer(bias.raw_data, dtype=np.float32) + 0.5
        bias.raw_data = values.astype(np.float32).tobytes()
        return model

    monkeypatch.setattr(export_module, "onnx_model", broken)
    with pytest.raises(ExportError, match="parity gap"):
        export(tiny_trained, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_parity_rejects_nan(tiny_trained):
    model = onnx_model(tiny_trained)
    bias = next(i for i in model.graph.initializer if i.name == "bias_0")
    bias.raw_data = np.full(16, np.nan, dtype=np.float32).tobytes()
    with pytest.raises(ExportError, match="non-finite"):
        check_parity(tiny_trained, model.SerializeToString(), all_binary(tiny_trained.model.dim))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(schema_version=99), "newer than this build"),
        (lambda m: m.update(dim="eight"), "dim"),
        (lambda m: m.update(mixture_weights=[1.0]), "mixture_weights"),
        (lambda m: m["members"][0].update(ordering=[0] * 8), "permutation"),
        (lambda m: m.update(surprise=1), "surprise"),
    ],
)
def test_invalid_manifests_are_named(tiny_artifact, tmp_path, edit, message):
    raw = json.loads((tiny_artifact / artifact.MANIFEST_FILE).read_text())
    edit(raw)
    (tmp_path / artifact.MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(artifact.ArtifactError, match=message):
        artifact.read_manifest(tmp_path)


def test_missing_and_tampered_onnx(tiny_artifact, tmp_path):
    manifest = artifact.read_manifest(tiny_artifact)
    with pytest.raises(artifact.ArtifactError, match="missing"):
        artifact.verify_onnx_file(tmp_path, manifest)
    data = (tiny_artifact / artifact.ONNX_FILE).read_bytes()
    (tmp_path / artifact.ONNX_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(artifact.ArtifactError, match="sha256"):
        artifact.verify_onnx_file(tmp_path, manifest)
    with pytest.raises(artifact.ArtifactError, match="does not exist"):
        artifact.read_manifest(tmp_path / "nowhere")
