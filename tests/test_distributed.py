"""Data-parallel training (model.distributed): two gloo ranks on 127.0.0.1 follow the one-process
optimisation, agree on the member schedule and the masks, stop together and resume; torchrun
trains digits end to end and the exported artifact serves."""

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from model.cli import export_main
from model.config import TrainConfig
from model.data import load_dataset
from model.distributed import Distributed, launched_ranks, process_group
from model.train import FINAL_MODEL, LAST_CHECKPOINT, METRICS_FILE, Trainer
from service.client import MadeClient
from service.contract import artifact
from tests.conftest import correlated_rows
from tests.servers import free_port, stop, wait_ready

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
RANKS_TIMEOUT_S = 120.0  # a rank left waiting in a collective would hang: fail instead
# Rank 0's validation figure per epoch: best at epoch 2, then worse twice, so patience 2 stops
# the run after epoch 4 of 6, a decision only rank 0 can take.
FAKE_VALID = [3.0, 2.0, 2.5, 2.6, 1.0, 1.0]
CONFIG = dict(
    source="files",
    hidden_sizes=[16, 16],
    num_masks=4,
    epochs=6,
    patience=2,
    batch_size=50,  # 603 training rows: the last batch of 3 is shared 1 and 2
    learning_rate=1e-2,
    direct=True,
    member_schedule="sample",  # drawn from the generator that draws the permutation
    seed=4,
)


class Interrupted(Exception):
    pass


class RecordingTrainer(Trainer):
    """Records the member trained at each step; validates by FAKE_VALID; can stop at an epoch."""

    interrupt_at: int | None = None

    def _member_for_step(self) -> int:
        member = super()._member_for_step()
        self.members.append(member)
        return member

    def _valid_mixture_nll(self) -> float:
        assert self.dist.is_main
        return FAKE_VALID[self.epoch]

    def _train_epoch(self) -> float:
        if self.epoch == self.interrupt_at:
            raise Interrupted
        return super()._train_epoch()


def recording_trainer(config: TrainConfig, out: Path, dist: Distributed | None = None):
    trainer = RecordingTrainer(config, out, progress=False, dist=dist)
    trainer.members = []
    return trainer


def mask_digest(trainer: Trainer) -> str:
    masks = [buffer.numpy().tobytes() for _, buffer in trainer.model.named_buffers()]
    return hashlib.sha256(b"".join(masks)).hexdigest()


def rank_worker(rank: int, port: int, world_size: int, job: dict) -> None:
    """One rank, launched as torchrun would: its environment names its place in the job."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    with process_group("cpu") as dist:
        trainer = recording_trainer(TrainConfig(**job["config"]), Path(job["out"]), dist)
        trainer.interrupt_at = job["interrupt_at"]
        if job["resume"]:
            trainer.resume()
        with contextlib.suppress(Interrupted):
            trainer.fit()
    record = {"members": trainer.members, "masks": mask_digest(trainer), "epochs": trainer.epoch}
    Path(job["out"], f"rank{rank}.json").write_text(json.dumps(record))


def run_ranks(job: dict, world_size: int = 2) -> list[dict]:
    context = mp.start_processes(
        rank_worker,
        args=(free_port(), world_size, job),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + RANKS_TIMEOUT_S
    while not context.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {RANKS_TIMEOUT_S} s")
    return [json.loads(Path(job["out"], f"rank{r}.json").read_text()) for r in range(world_size)]


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    one, two = model_state(a), model_state(b)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=1e-4, atol=1e-5, msg=name)


def test_two_ranks_follow_the_one_process_run_stop_together_and_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i, (split, n) in enumerate((("train", 603), ("valid", 200), ("test", 200))):
        np.save(data / f"{split}.npy", correlated_rows(n, 8, seed=10 + i))
    config = TrainConfig(**CONFIG, data_dir=str(data))

    single = recording_trainer(config, tmp_path / "single")
    single.fit()
    assert single.epoch == 4  # patience stopped it

    job = {"config": config.to_dict(), "out": str(tmp_path / "ddp"), "resume": False}
    first = run_ranks({**job, "interrupt_at": 2})
    assert [r["epochs"] for r in first] == [2, 2]
    second = run_ranks({**job, "interrupt_at": None, "resume": True})
    # Both ranks stopped after epoch 4 on rank 0's decision (rank 1 never validates).
    assert [r["epochs"] for r in second] == [4, 4]

    steps_per_epoch = -(-603 // 50)
    for one, two in zip(first, second, strict=True):
        assert one["members"] + two["members"] == single.members
        assert len(single.members) == 4 * steps_per_epoch
        assert one["masks"] == two["masks"] == mask_digest(single)

    ddp, ref = tmp_path / "ddp", tmp_path / "single"
    assert_same_weights(ddp / LAST_CHECKPOINT, ref / LAST_CHECKPOINT)  # after 48 steps
    assert_same_weights(ddp / FINAL_MODEL, ref / FINAL_MODEL)  # the best epoch, 2
    lines = [
        [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
        for run in (ddp, ref)
    ]
    assert [r["epoch"] for r in lines[0]] == [1, 2, 3, 4]  # written once, by rank 0
    np.testing.assert_allclose(
        [r["train_nll"] for r in lines[0]], [r["train_nll"] for r in lines[1]], rtol=1e-5
    )


def test_a_batch_that_does_not_split_evenly_is_refused(tiny_data_dir: Path, tmp_path: Path):
    config = TrainConfig(source="files", data_dir=str(tiny_data_dir), batch_size=51)
    with pytest.raises(ValueError, match=r"batch-size 51 is the global batch.*multiple of 2"):
        Trainer(config, tmp_path, dist=Distributed(rank=0, world_size=2))


def test_batch_slices_partition_every_global_batch() -> None:
    for size in (50, 3, 1):
        slices = [Distributed(rank=r, world_size=2).batch_slice(size) for r in range(2)]
        rows = [i for s in slices for i in range(size)[s]]
        assert rows == list(range(size))
    assert Distributed(rank=1, world_size=2).batch_slice(50) == slice(25, 50)


def test_launched_ranks_read_torchruns_environment() -> None:
    assert launched_ranks({}) == (0, 1, 0)
    assert launched_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)


def test_torchrun_trains_digits_and_the_artifact_serves(tmp_path: Path) -> None:
    run, art = tmp_path / "run", tmp_path / "art"
    command = [BIN / "torchrun", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    command += ["--master-port", str(free_port()), "-m", "model.cli", "--preset", "digits"]
    command += ["--epochs", "2", "--masks", "2", "--hidden", "32", "--out", run, "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("model written to") == 1, done.stdout  # rank 0 alone prints
    assert len((run / METRICS_FILE).read_text().splitlines()) == 2
    assert export_main([str(run / FINAL_MODEL), "--out", str(art)]) == 0

    manifest = artifact.read_manifest(art)
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [BIN / "made-serve", "--model", art, "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    client = MadeClient(f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, log)
        test_rows = load_dataset("digits").test
        served = client.log_likelihood(test_rows).log_likelihood
    finally:
        client.close()
        stop(server, signal.SIGTERM, 30)
    # The service's mean NLL of the test split is the one rank 0 evaluated after training.
    assert -served.mean() == pytest.approx(manifest.metrics["test"].shipped_mixture, abs=1e-3)
