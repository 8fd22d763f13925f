"""--device and --precision: bf16 autocast trains on the CPU with float32 weights and a float32
artifact; on a GPU (skipped without one) checkpoints and model.pt hold CPU tensors and resume on
the CPU."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from model.config import TrainConfig
from model.distributed import Distributed, resolve_device
from model.export import export
from model.train import FINAL_MODEL, LAST_CHECKPOINT, Trainer
from service.contract import artifact

CUDA = torch.cuda.is_available()


def tiny_config(data_dir: Path, **overrides: object) -> TrainConfig:
    settings = dict(
        source="files",
        data_dir=str(data_dir),
        hidden_sizes=[16],
        num_masks=2,
        epochs=2,
        batch_size=50,
        learning_rate=1e-2,
        direct=True,
    )
    return TrainConfig(**{**settings, **overrides})


def tensors(state: object) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for value in state.values() for t in tensors(value)]
    if isinstance(state, list | tuple):
        return [t for value in state for t in tensors(value)]
    return []


def test_bf16_autocast_trains_float32_weights_and_exports_a_float32_graph(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    cpu = Distributed(device=torch.device("cpu"))
    fp32 = Trainer(tiny_config(tiny_data_dir), tmp_path / "fp32", progress=False, dist=cpu).fit()
    trainer = Trainer(
        tiny_config(tiny_data_dir), tmp_path / "bf16", progress=False, dist=cpu, precision="bf16"
    )
    bf16 = trainer.fit()
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    # bfloat16 rounds the forward pass: a different run, not a broken one.
    assert not torch.equal(bf16.model.layers[0].weight, fp32.model.layers[0].weight)
    assert abs(bf16.report.test.shipped_mixture - fp32.report.test.shipped_mixture) < 0.5
    manifest, _ = export(bf16, tmp_path / "art")
    graph = onnx.load(tmp_path / "art" / artifact.ONNX_FILE)
    weights = [numpy_helper.to_array(init) for init in graph.graph.initializer]
    assert {w.dtype for w in weights if w.dtype.kind == "f"} == {np.dtype(np.float32)}
    assert manifest.onnx.sha256 == artifact.sha256_of(tmp_path / "art" / artifact.ONNX_FILE)


def test_an_unknown_precision_and_a_missing_gpu_are_named(tiny_data_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16"):
        Trainer(tiny_config(tiny_data_dir), tmp_path, precision="fp16")
    assert resolve_device("cpu") == torch.device("cpu")
    if not CUDA:
        with pytest.raises(ValueError, match=r"--device cuda: torch .* sees no CUDA device"):
            resolve_device("cuda")


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_a_gpu_run_saves_cpu_tensors_and_resumes_on_the_cpu(tiny_data_dir, tmp_path) -> None:
    gpu = Distributed(device=resolve_device("cuda"))
    config = tiny_config(tiny_data_dir, epochs=3)
    trainer = Trainer(config, tmp_path, progress=False, dist=gpu, precision="bf16")
    trainer.fit()
    for name in (LAST_CHECKPOINT, FINAL_MODEL):
        state = torch.load(tmp_path / name, weights_only=True)
        assert {t.device.type for t in tensors(state)} == {"cpu"}, name
    resumed = Trainer(config, tmp_path, progress=False, dist=Distributed())
    resumed.resume()
    assert resumed.epoch == 3
    export(resumed.finish(), tmp_path / "art")
