"""In-process figures: the sgemm ceiling, onnxruntime rows/s, sampling and completion rates."""

import itertools
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from threadpoolctl import threadpool_limits

from service.contract.graph_nets import member_nets_from_graph
from service.contract.sampler import MemberNet
from service.inference.engine import Engine
from service.settings import available_cpus
from tests.bench.common import rate, spread

SGEMM_SIZE = 2048
SAMPLES = 256


def sgemm_flops(threads: int, repeats: int = 5) -> list[float]:
    """float32 FLOP/s of a large square MatMul through onnxruntime with ``threads`` threads."""
    n = SGEMM_SIZE
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor("b", TensorProto.FLOAT, [n, n], np.ones(n * n, np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "g", [a], [c], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((n, n), dtype=np.float32)
    calls_per_second = rate(lambda: session.run(None, {"a": x}), 1, repeats, min_time=0.5)
    return [2.0 * n**3 * r for r in calls_per_second]


def ensemble_flops(engine: Engine) -> float:
    """Multiply-add FLOPs of one row through all members (dense, as onnxruntime computes it)."""
    m = engine.manifest
    sizes = [m.dim, *m.hidden_sizes, m.dim]
    per_member = sum(2 * a * b for a, b in itertools.pairwise(sizes))
    if m.direct_connections:
        per_member += 2 * m.dim * m.dim
    return float(per_member * m.num_members)


def onnx_rows_per_second(engine: Engine, batch: int) -> list[float]:
    rows = (np.random.default_rng(batch).random((batch, engine.dim)) < 0.5).astype(np.float32)
    return rate(lambda: engine.member_log_probs(rows), batch)


def naive_sample(net: MemberNet, uniforms: np.ndarray) -> np.ndarray:
    """The baseline: one full forward pass of the member per dimension."""
    n, dim = uniforms.shape
    x = np.zeros((n, dim), dtype=np.float32)
    for t, d in enumerate(net.ordering):
        h = x
        for weight, bias in net.hidden:
            h = np.maximum(h @ weight.T + bias, 0.0)
        logits = h @ net.out_weight.T + net.out_bias
        if net.direct is not None:
            logits += x @ net.direct.T
        x[:, d] = uniforms[:, t] < 1.0 / (1.0 + np.exp(-logits[:, d]))
    return x


def sampling(engine: Engine, artifact: Path) -> dict[str, object]:
    """Samples/s of ``Engine.sample`` and of the naive method on the same members and uniforms."""
    nets = member_nets_from_graph(onnx.load(str(artifact / "model.onnx")), engine.manifest)
    fast = rate(lambda: engine.sample(SAMPLES, np.random.default_rng(1)), SAMPLES, min_time=0.5)
    rng = np.random.default_rng(2)
    members = rng.choice(engine.num_members, size=SAMPLES, p=engine.weights)
    uniforms = rng.random((SAMPLES, engine.dim))
    start = time.perf_counter()
    naive = np.empty((SAMPLES, engine.dim), dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):  # as the sampler runs; more threads were slower
        for k in np.unique(members):
            rows = members == k
            naive[rows] = naive_sample(nets[k], uniforms[rows])
    naive_rate = SAMPLES / (time.perf_counter() - start)

    given = np.full((SAMPLES, engine.dim), np.nan, dtype=np.float32)
    blocked, _ = engine.sampler.draw(members, given, uniforms)
    return {
        "fast": spread(fast),
        "naive": naive_rate,
        "rows_differing_from_naive": int((blocked != naive).any(axis=1).sum()),
    }


def completion(engine: Engine, mask: str, rows: int = 16, per_row: int = 16) -> dict[str, object]:
    """Completions/s of ``rows`` images with the bottom half or a random half missing."""
    rng = np.random.default_rng(3)
    images = engine.sample(rows, rng)
    missing = np.zeros_like(images, dtype=bool)
    if mask == "bottom-half":
        missing[:, engine.dim // 2 :] = True
    else:
        missing = rng.random(images.shape) < 0.5
    given = np.where(missing, np.nan, images).astype(np.float32)
    methods: set[str] = set()

    def work() -> None:
        result = engine.complete(given, per_row, 256, np.random.default_rng(4))
        methods.update(result.method)

    figures = rate(work, rows * per_row, repeats=3, min_time=0.5)
    return {"rate": spread(figures), "method": sorted(methods), "rows": rows, "per_row": per_row}


def run(artifact: Path, natural: Path) -> dict[str, object]:
    """Every in-process figure, with the engine threaded as the service would thread it."""
    threads = available_cpus()
    engine = Engine.load(artifact, threads)
    flops = ensemble_flops(engine)
    sgemm = sgemm_flops(threads)
    onnx_rates = {
        str(batch): spread(onnx_rows_per_second(engine, batch)) for batch in (1, 16, 100, 256)
    }
    natural_engine = Engine.load(natural, threads)
    return {
        "threads": threads,
        "model": {
            "name": engine.manifest.name,
            "dim": engine.dim,
            "hidden": engine.manifest.hidden_sizes,
            "members": engine.num_members,
            "direct": engine.manifest.direct_connections,
            "onnx_ops": len(onnx.load(str(artifact / "model.onnx")).graph.node),
        },
        "ensemble_flops_per_row": flops,
        "sgemm_flops": spread(sgemm),
        "ceiling_rows_per_s": spread([f / flops for f in sgemm]),
        "onnx_rows_per_s": onnx_rates,
        "sampling": sampling(engine, artifact),
        "completion": {
            "bottom-half (random orderings)": completion(engine, "bottom-half"),
            "bottom-half (natural orderings)": completion(natural_engine, "bottom-half"),
            "random-half": completion(engine, "random-half"),
        },
    }
