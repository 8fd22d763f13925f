"""The exported artifact reproduces torch, normalises, is small, and round-trips its manifest;
export and load accept sharp models and refuse tampered graphs."""

import dataclasses
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from pydantic import ValidationError

from model import export as export_module
from model.export import ExportError, check_parity, export, onnx_model, trained_nets
from model.onnx_graph import build_graph, reduction_error_bound
from model.train import TrainedModel, member_log_probs, source_data
from service.contract import artifact, parity
from service.contract.masks import draw_pool
from service.contract.mixture import mixture_log_prob
from service.contract.sampler import Sampler
from service.inference.engine import Engine
from tests.conftest import train_tiny
from tests.test_bad_artifacts import reseal
from tests.test_made import all_binary

SHARPEN = 10.0  # the trained logits' scale-up: random rows then score about 20,000 nats


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
    exact = float64_log_prob(rows, logits)
    relative, absolute = reduction_error_bound(dim)
    assert (np.abs(log_prob - exact) <= relative * np.abs(exact) + absolute).all()
    assert relative <= parity.RTOL and absolute <= parity.ATOL  # at the dimensions tested here


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
        check_parity(
            tiny_trained, model.SerializeToString(), {"all": all_binary(tiny_trained.model.dim)}
        )


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


def noisy_patterns(n: int, dim: int, seed: int) -> np.ndarray:
    """[n, dim] copies of four fixed random patterns with 1% of the entries flipped."""
    patterns = np.random.default_rng(123).random((4, dim)) < 0.5
    rng = np.random.default_rng(seed)
    rows = patterns[rng.integers(0, 4, n)]
    return (rows ^ (rng.random(rows.shape) < 0.01)).astype(np.float32)


@pytest.fixture(scope="module")
def sharp_trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """D = 784 as MNIST, trained briefly, its logits then multiplied by SHARPEN (as a long run on
    real data makes them): its samples score tens of nats, random rows tens of thousands."""
    data = tmp_path_factory.mktemp("sharp-data")
    for seed, split in enumerate(("train", "valid", "test")):
        np.save(data / f"{split}.npy", noisy_patterns(300 if split == "train" else 100, 784, seed))
    trained = train_tiny(
        tmp_path_factory.mktemp("sharp-run"),
        data,
        hidden_sizes=[32],
        num_masks=2,
        epochs=1,
        learning_rate=3e-2,
    )
    with torch.no_grad():
        for layer in (trained.model.layers[-1], trained.model.direct):
            layer.weight.mul_(SHARPEN)
            if layer.bias is not None:
                layer.bias.mul_(SHARPEN)
    return trained


def test_a_sharp_model_exports_and_loads(sharp_trained, tmp_path):
    """Float32 resolves 20,000 nats to about 2e-3 only: an absolute 1e-3 nats refused this model
    at export, and at load. Both now measure against float64 with a relative tolerance."""
    rows = export_module.parity_inputs(sharp_trained, source_data(sharp_trained.config).valid)
    assert np.median(member_log_probs(sharp_trained.model, rows["random"])) < -10_000
    assert np.median(member_log_probs(sharp_trained.model, rows["sampled"])) > -100
    export(sharp_trained, tmp_path / "art")
    engine = Engine.load(tmp_path / "art")
    reference = parity.reference_log_probs(trained_nets(sharp_trained), rows["random"])
    assert parity.worst_gap(engine.member_log_probs(rows["random"]), reference).within


def moved_output_bias(trained: TrainedModel, model: onnx.ModelProto) -> onnx.TensorProto:
    """A copy of the graph's output bias with member 0's first dimension moved by 0.01: that
    conditional reads no input, so every row's log-likelihood under member 0 moves by < 0.01."""
    name = artifact.INIT_BIAS.format(layer=len(trained.model.hidden_sizes))
    value = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))
    value = value.copy()
    value[trained.model.pool.orderings[0][0]] += 0.01
    return numpy_helper.from_array(value, name)


def test_export_refuses_a_small_perturbation_of_a_sharp_model(sharp_trained, tmp_path, monkeypatch):
    """The relative tolerance keeps its power on the rows that score little: 0.01 in one bias,
    beside weights of tens, is refused."""

    def perturbed(trained: TrainedModel) -> onnx.ModelProto:
        model = onnx_model(trained)
        bias = moved_output_bias(trained, model)
        next(i for i in model.graph.initializer if i.name == bias.name).CopyFrom(bias)
        return model

    monkeypatch.setattr(export_module, "onnx_model", perturbed)
    with pytest.raises(ExportError, match=r"onnxruntime parity gap .* on (real|sampled) rows"):
        export(sharp_trained, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_load_refuses_a_graph_that_does_not_compute_its_weights(sharp_trained, tmp_path):
    """The graph's output layer adds a moved copy of its bias while the bias initializer, which
    the engine reads, and the resealed sha256 are intact: only the load-time parity sees it."""
    art = tmp_path / "art"
    export(sharp_trained, art)
    model = onnx.load(str(art / artifact.ONNX_FILE))
    bias = moved_output_bias(sharp_trained, model)
    original, bias.name = bias.name, f"{bias.name}_tampered"
    model.graph.initializer.append(bias)
    for node in model.graph.node:
        node.input[:] = [bias.name if i == original else i for i in node.input]
    onnx.save(model, str(art / artifact.ONNX_FILE))
    reseal(art)
    with pytest.raises(artifact.ArtifactError, match="differ from its own weights"):
        Engine.load(art)


def test_load_refuses_a_sampler_that_disagrees_with_the_weights(tiny_artifact, monkeypatch):
    """Samples and completions come from the sampler's reading of the weights: 0.01 nats off in
    its log-likelihoods is refused at load."""
    draw = Sampler.draw

    def off(self: Sampler, *args: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, log_weight = draw(self, *args)
        return x, log_weight + 0.01

    monkeypatch.setattr(Sampler, "draw", off)
    with pytest.raises(artifact.ArtifactError, match="the sampler's log-likelihoods differ"):
        Engine.load(tiny_artifact)


def test_export_refuses_to_write_a_nan_manifest(tiny_trained, tmp_path):
    """A diverged run's NaN weights: ExportError naming the field, and nothing is written."""
    k = tiny_trained.model.num_members
    report = dataclasses.replace(tiny_trained.report, mixture_weights=[math.nan] * k)
    with pytest.raises(ExportError, match=r"manifest would be invalid: mixture_weights\.0"):
        export(dataclasses.replace(tiny_trained, report=report), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_manifest_built_in_code_refuses_nan(tiny_artifact):
    """Not only the JSON reader: pydantic refuses non-finite floats wherever a manifest is built,
    so export cannot write one."""
    manifest = artifact.read_manifest(tiny_artifact)
    raw = json.loads(manifest.model_dump_json())
    raw["metrics"]["test"]["shipped_mixture"] = math.nan
    with pytest.raises(ValidationError, match="finite"):
        artifact.Manifest.model_validate(raw)
