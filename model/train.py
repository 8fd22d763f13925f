"""Order- and connectivity-agnostic training of a MADE mask pool, with early stopping on the
validation mixture NLL, resumable checkpoints and a JSON-lines metrics file.

One process, or several launched by torchrun (``model.distributed``): every rank draws the same
seeded permutation and member schedule and trains its slice of every global batch; rank 0
validates, decides when to stop, evaluates and writes the files."""

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import TypeAdapter
from tqdm import tqdm

from model.config import TrainConfig
from model.data import Dataset, hold_out_calibration, load_dataset
from model.distributed import Distributed
from model.made import MADE
from model.rows import Rows
from service.contract.artifact import DataInfo, SplitMetrics
from service.contract.masks import MaskPool, draw_pool
from service.contract.mixture import fit_em_weights, mixture_log_prob
from service.contract.schema import Categorical, Dimension, Schema

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
FINAL_MODEL = "model.pt"
METRICS_FILE = "metrics.jsonl"
REPORT_FILE = "report.json"
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")


@dataclass(frozen=True)
class DatasetInfo:
    """Where the training rows came from; the manifest's ``DataInfo`` plus the image shape."""

    source: str
    location: str | None
    binarization: str
    image_shape: list[int] | None
    split_sizes: dict[str, int]
    # Each dimension's family (``service.contract.schema``) as JSON; None: every one is 0/1.
    dimensions: list[dict] | None = None

    def to_dict(self) -> dict[str, object]:
        report = asdict(self)
        if self.dimensions is None:  # binary runs' model.pt stays as it was
            del report["dimensions"]
        return report

    def schema(self) -> Schema | None:
        if self.dimensions is None:
            return None
        return Schema(TypeAdapter(list[Dimension]).validate_python(self.dimensions))

    def data_info(self) -> DataInfo:
        return DataInfo(
            source=self.source,
            location=self.location,
            binarization=self.binarization,
            split_sizes=self.split_sizes,
        )


@dataclass(frozen=True)
class SplitNll:
    """The fields of the contract's ``SplitMetrics``, unvalidated: a diverged run still writes its
    NaN report, and export refuses it by naming the field."""

    members: list[float]
    uniform_mixture: float
    em_mixture: float
    shipped_mixture: float

    def metrics(self) -> SplitMetrics:
        return SplitMetrics(**asdict(self))


@dataclass(frozen=True)
class TrainingReport:
    """Evaluation of the best epoch (NLL in nats per example) and the mixture weights to ship;
    ``to_dict`` is report.json and what model.pt stores, in that key order."""

    mixture_weights: list[float]
    weights_kind: Literal["uniform", "em"]
    em_weights: list[float]
    em_alpha: float
    valid: SplitNll
    test: SplitNll
    epochs_run: int
    train_seconds: float
    best_valid_uniform_nll: float
    pruned_members: list[int] | None = None  # set by export's pruning, never by training

    def to_dict(self) -> dict[str, object]:
        report = asdict(self)
        if self.pruned_members is None:
            del report["pruned_members"]
        return report

    @classmethod
    def from_dict(cls, report: dict) -> "TrainingReport":
        return cls(
            **{
                **report,
                "valid": SplitNll(**report["valid"]),
                "test": SplitNll(**report["test"]),
            }
        )


@dataclass
class TrainedModel:
    """What export needs: the network at its best epoch, its data and its evaluation report."""

    config: TrainConfig
    model: MADE
    dataset_info: DatasetInfo
    report: TrainingReport


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_cpu(state: object) -> object:
    """``state`` (a state dict, possibly nested) with every tensor on the CPU: what a GPU run
    saves loads anywhere, and a CPU run's tensors are saved as they are."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {key: on_cpu(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(on_cpu(value) for value in state)
    return state


def fetch(rows: Rows, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The float32 rows ``index`` of a split (in memory or on disk), on ``device``; through
    pinned memory to a GPU, so the copy runs asynchronously."""
    batch = torch.from_numpy(rows[index.numpy()])
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch


@torch.no_grad()
def member_log_probs(model: MADE, rows: Rows, batch_size: int = 2000) -> np.ndarray:
    """[N, K] float64 log p_k(x) in nats for every row and member, ``batch_size`` rows at a time
    (a split on disk is streamed, never read whole)."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [
        model.member_log_probs(torch.as_tensor(rows[i : i + batch_size], device=device)).cpu()
        for i in range(0, len(rows), batch_size)
    ]
    return torch.cat(chunks).double().numpy()


def build_model(
    config: TrainConfig, dim: int, pool: MaskPool | None = None, schema: Schema | None = None
) -> MADE:
    pool = pool or draw_pool(
        config.num_masks, dim, config.hidden_sizes, config.ordering, config.seed
    )
    return MADE(
        dim, config.hidden_sizes, pool, direct=config.direct, schema=schema, dropout=config.dropout
    )


def pool_to_state(pool: MaskPool) -> dict[str, object]:
    return {
        "orderings": torch.as_tensor(pool.orderings),
        "hidden_degrees": [torch.as_tensor(h) for h in pool.hidden_degrees],
    }


def pool_from_state(state: dict) -> MaskPool:
    return MaskPool(
        orderings=state["orderings"].numpy(),
        hidden_degrees=tuple(h.numpy() for h in state["hidden_degrees"]),
    )


def source_data(config: TrainConfig) -> Dataset:
    """The run's data source as it comes, every validation row included."""
    return load_dataset(
        config.source, Path(config.data_dir) if config.data_dir else None, config.missing
    )


def training_data(config: TrainConfig) -> Dataset:
    """The rows a run trains, stops and fits weights on, with its calibration rows held out."""
    return hold_out_calibration(source_data(config), config.calibration_fraction)


def dataset_info(data: Dataset) -> DatasetInfo:
    return DatasetInfo(
        source=data.name,
        location=data.location,
        binarization=data.binarization,
        image_shape=list(data.image_shape) if data.image_shape else None,
        split_sizes=data.split_sizes(),
        dimensions=None
        if data.schema is None
        else [d.model_dump(exclude_none=True) for d in data.schema.dimensions],
    )


def evaluate(
    model: MADE,
    data: Dataset,
    em_alpha: float,
    epochs_run: int,
    train_seconds: float,
    best_valid_uniform_nll: float,
) -> TrainingReport:
    """Members, uniform mixture and EM mixture NLL on valid and test; EM weights fit on valid.
    The run's figures (epochs, seconds, best validation NLL) go into the report as given."""
    log_probs = {split: member_log_probs(model, data.split(split)) for split in ("valid", "test")}
    k = model.num_members
    uniform = np.full(k, 1.0 / k)
    em = fit_em_weights(log_probs["valid"], alpha=em_alpha)

    def nll(split: str, weights: np.ndarray) -> float:
        return float(-mixture_log_prob(log_probs[split], weights).mean())

    use_em = nll("valid", em) < nll("valid", uniform)
    shipped = em if use_em else uniform
    splits = {
        split: SplitNll(
            members=(-log_probs[split].mean(axis=0)).tolist(),
            uniform_mixture=nll(split, uniform),
            em_mixture=nll(split, em),
            shipped_mixture=nll(split, shipped),
        )
        for split in ("valid", "test")
    }
    return TrainingReport(
        mixture_weights=shipped.tolist(),
        weights_kind="em" if use_em else "uniform",
        em_weights=em.tolist(),
        em_alpha=em_alpha,
        valid=splits["valid"],
        test=splits["test"],
        epochs_run=epochs_run,
        train_seconds=train_seconds,
        best_valid_uniform_nll=best_valid_uniform_nll,
    )


class Trainer:
    """One training run in ``out_dir``: fit, checkpoint every epoch, stop early, evaluate.

    dist: this process's rank among those torchrun launched, and its device (default: one
        process, on cuda when available).
    precision: ``bf16`` runs the forward pass under bfloat16 autocast; the weights, optimizer,
        loss, evaluation and everything saved stay float32.
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: Path,
        progress: bool = True,
        dist: Distributed | None = None,
        precision: Precision = "fp32",
    ):
        self.dist = dist or Distributed(device=pick_device())
        if config.batch_size % self.dist.world_size:
            raise ValueError(
                f"--batch-size {config.batch_size} is the global batch, split evenly over the "
                f"{self.dist.world_size} processes: make it a multiple of {self.dist.world_size}"
            )
        if precision not in PRECISIONS:
            raise ValueError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        if not 1 <= config.valid_every <= config.patience:
            raise ValueError(
                f"--valid-every {config.valid_every} must be at least 1 and at most the patience "
                f"({config.patience}), so that some epoch is validated before training stops"
            )
        self.config = config
        self.out_dir = out_dir
        self.progress = progress and self.dist.is_main
        self.precision = precision
        self.device = self.dist.device
        self.data = training_data(config)
        torch.manual_seed(config.seed)
        self.model = build_model(config, self.data.dim, schema=self.data.schema).to(self.device)
        self.trained_module = self.dist.wrap(self.model)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.epochs)
            if config.lr_schedule == "cosine"
            else None
        )
        # Draws each epoch's permutation and the sampled member schedule: seeded alike on every
        # rank and drawn in the same order, so all ranks agree on both by construction.
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0
        self.step = 0
        self.best_valid = math.inf
        self.best_state: dict[str, torch.Tensor] = {}
        self.epochs_since_best = 0
        self.seconds = 0.0

    # -- checkpoints -----------------------------------------------------------------------
    def _state(self) -> dict[str, object]:
        return {
            "config": self.config.to_dict(),
            "pool": pool_to_state(self.model.pool),
            "model": on_cpu(self.model.state_dict()),
            "optimizer": on_cpu(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "best_valid": self.best_valid,
            "best_state": self.best_state,
            "epochs_since_best": self.epochs_since_best,
            "seconds": self.seconds,
        }

    def save_checkpoint(self) -> None:
        path = self.out_dir / LAST_CHECKPOINT
        torch.save(self._state(), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    def resume(self) -> None:
        """Continue from ``last.pt`` (every rank reads it); on any device, since it holds CPU
        tensors that loading copies to the model's and the optimizer's device."""
        state = torch.load(self.out_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
        # A checkpoint older than an option holds no value for it: the option's default then.
        saved = {**TrainConfig().to_dict(), **state["config"]}
        if saved != self.config.to_dict():
            raise ValueError(
                f"{self.out_dir / LAST_CHECKPOINT} was written with another configuration; "
                "resume with the same options or use a new --out"
            )
        # The pool is drawn from the seed, so the rebuilt network already has the same masks.
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_valid, self.best_state = state["best_valid"], state["best_state"]
        self.epochs_since_best, self.seconds = state["epochs_since_best"], state["seconds"]
        if self.dist.is_main:
            log.info("resumed from epoch %d (best valid NLL %.3f)", self.epoch, self.best_valid)

    # -- training ----------------------------------------------------------------------------
    def _member_for_step(self) -> int:
        k = self.model.num_members
        if self.config.member_schedule == "cycle":
            return self.step % k
        return int(torch.randint(k, (1,), generator=self.generator))

    def _loss(self, x: torch.Tensor, member: int, batch_rows: int) -> torch.Tensor:
        """The loss to back-propagate for this rank's ``x`` of a global batch of ``batch_rows``.

        One process: the batch's mean NLL. Several: this rank's summed NLL times world size /
        batch_rows, whose gradient DDP averages over the ranks into exactly the gradient of the
        global batch's mean NLL, also for an epoch's last batch, shared unevenly.
        """
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.trained_module(x, member)
        nll = -self.model.log_prob_from(logits.float(), x)
        if self.dist.world_size == 1:
            return nll.mean()
        return nll.sum() * (self.dist.world_size / batch_rows)

    def _train_epoch(self) -> float:
        self.model.train()
        order = torch.randperm(len(self.data.train), generator=self.generator)
        batches = order.split(self.config.batch_size)
        total, count = 0.0, 0
        # tqdm's None disables the bar when stderr is not a terminal: a log then holds only the
        # epoch summary that fit() logs, not one line per bar update.
        bar = tqdm(
            batches,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            unit="batch",
            leave=False,
            disable=None if self.progress else True,
        )
        world = self.dist.world_size
        for batch in bar:
            index = batch[self.dist.batch_slice(len(batch))]
            x = fetch(self.data.train, index, self.device)
            loss = self._loss(x, self._member_for_step(), len(batch))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            total += loss.item() * len(batch) / world  # this rank's summed NLL
            count += len(index)
            bar.set_postfix(nll=f"{total / max(count, 1):.2f}")
        total, count = self.dist.sum([total, count])
        return total / count

    def _validates(self) -> bool:
        """Whether the epoch now training is validated: every ``valid_every``-th, and the last."""
        epoch = self.epoch + 1
        return epoch % self.config.valid_every == 0 or epoch == self.config.epochs

    def _valid_mixture_nll(self) -> float:
        log_probs = member_log_probs(self.model, self.data.valid)
        k = self.model.num_members
        return float(-mixture_log_prob(log_probs, np.full(k, 1.0 / k)).mean())

    def fit(self) -> TrainedModel:
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            sizes = ", ".join(f"{split} {n:,}" for split, n in self.data.split_sizes().items())
            log.info("%s rows of D=%d: %s", self.data.name, self.data.dim, sizes)
            if self.data.schema is not None:
                log.info(
                    "schema (%s): %s",
                    self.data.schema_origin or "the source's",
                    self.data.schema.describe(),
                )
                for col, dimension in enumerate(self.data.schema.dimensions):
                    if isinstance(dimension, Categorical) and dimension.labels is not None:
                        log.info(
                            "column %s: labels %s",
                            self.data.schema.column(col),
                            ", ".join(dimension.labels),
                        )
        while self.epoch < self.config.epochs and self.epochs_since_best < self.config.patience:
            started = time.perf_counter()
            train_nll = self._train_epoch()
            # Rank 0 validates; every rank gets its figure and so keeps the same best epoch and
            # patience count as rank 0: they all take the same decision to stop. An epoch left
            # unvalidated (valid_every) counts toward the patience, as one without improvement.
            valid_nll = self.dist.broadcast(
                self._valid_mixture_nll() if self.dist.is_main and self._validates() else math.nan
            )
            if self.scheduler is not None:
                self.scheduler.step()
            self.epoch += 1
            self.seconds += time.perf_counter() - started
            improved = valid_nll < self.best_valid
            if improved:
                self.best_valid, self.epochs_since_best = valid_nll, 0
                self.best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                }
            else:
                self.epochs_since_best += 1
            if self.dist.is_main:
                self._write_epoch(train_nll, valid_nll, improved)
        return self.finish()

    def _write_epoch(self, train_nll: float, valid_nll: float, improved: bool) -> None:
        record = {
            "epoch": self.epoch,
            "train_nll": train_nll,
            "valid_mixture_nll": None if math.isnan(valid_nll) else valid_nll,
            "best_valid_mixture_nll": None if math.isinf(self.best_valid) else self.best_valid,
            "seconds": round(self.seconds, 2),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        with (self.out_dir / METRICS_FILE).open("a") as metrics:
            metrics.write(json.dumps(record) + "\n")
        self.save_checkpoint()
        log.info(
            "epoch %d: train %.3f valid mixture %s%s",
            self.epoch,
            train_nll,
            "not measured" if math.isnan(valid_nll) else f"{valid_nll:.3f}",
            " (best)" if improved else "",
        )

    def finish(self) -> TrainedModel:
        """The best epoch's network, evaluated and written by rank 0; every rank returns it, on
        the CPU (as export reads it), once model.pt is written."""
        self.model.load_state_dict(self.best_state)
        info = dataset_info(self.data)
        report = None
        if self.dist.is_main:
            report = evaluate(
                self.model,
                self.data,
                self.config.em_alpha,
                epochs_run=self.epoch,
                train_seconds=round(self.seconds, 2),
                best_valid_uniform_nll=self.best_valid,
            )
            save_trained(
                TrainedModel(self.config, self.model, info, report), self.out_dir / FINAL_MODEL
            )
            (self.out_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        report = self.dist.broadcast_object(report)
        return TrainedModel(self.config, self.model.cpu(), info, report)


def save_trained(trained: TrainedModel, path: Path) -> None:
    torch.save(
        {
            "config": trained.config.to_dict(),
            "pool": pool_to_state(trained.model.pool),
            "model": on_cpu(trained.model.state_dict()),
            "dataset": trained.dataset_info.to_dict(),
            "report": trained.report.to_dict(),
        },
        path,
    )


def load_trained(path: Path) -> TrainedModel:
    """Load a final ``model.pt`` (a run directory holding one works too)."""
    if path.is_dir():
        path = path / FINAL_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; train first (made-train)")
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    # Runs from before calibration held nothing out: their validation rows all shaped the model.
    config = TrainConfig(**{"calibration_fraction": 0.0, **state["config"]})
    info = DatasetInfo(**state["dataset"])
    model = build_model(
        config, state["pool"]["orderings"].shape[1], pool_from_state(state["pool"]), info.schema()
    )
    model.load_state_dict(state["model"])
    # model.pt holds plain dicts (weights_only loading), so runs trained before the typed report
    # load unchanged.
    return TrainedModel(
        config,
        model.eval(),
        info,
        TrainingReport.from_dict(state["report"]),
    )
