"""Data-parallel training across processes with torch.distributed, as torchrun launches it.

``Distributed`` is this process's place in the job (torchrun's RANK, WORLD_SIZE, LOCAL_RANK)
and the few collectives the trainer needs. A single process is the same object with world size
1, where each collective returns its input and the model is not wrapped, so the trainer has one
code path and a one-process run computes exactly what it did before distributed training existed.
"""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # This process's device: the model's, and the collectives' tensors'.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 validates, decides when to stop, writes every file and prints."""
        return self.rank == 0

    def batch_slice(self, size: int) -> slice:
        """This rank's share of a global batch of ``size`` rows: a contiguous slice, as equal as
        the size allows. Not DistributedSampler's default (a stride over the whole epoch): with
        contiguous slices of each global batch, the ranks' rows of batch b are together exactly
        batch b of the one-process run on the same permutation, so both follow one optimisation."""
        return slice(size * self.rank // self.world_size, size * (self.rank + 1) // self.world_size)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` under DistributedDataParallel, which averages the gradients over the ranks.
        Every mask uses every weight (masked entries get zero gradients), so no parameter is ever
        unused and find_unused_parameters stays off. The masks are buffers derived from the seed,
        identical on every rank by construction: they are not broadcast on each forward."""
        if self.world_size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every rank."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def sum(self, values: list[float]) -> list[float]:
        """The element-wise sum of ``values`` over the ranks, on every rank."""
        if self.world_size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast_object(self, value: object) -> object:
        """Rank 0's picklable ``value`` on every rank."""
        if self.world_size == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0, device=self.device)
        return holder[0]


def launched_ranks(environ: Mapping[str, str] = os.environ) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, 0
    rank = int(environ["RANK"])
    return rank, world_size, int(environ.get("LOCAL_RANK", rank))


def resolve_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """``--device``: cuda when available unless told; on cuda, the GPU of this local rank."""
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise ValueError(f"--device cuda: torch {torch.__version__} sees no CUDA device")
    if requested not in (None, "cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {requested!r}")
    if requested == "cpu" or not cuda:
        return torch.device("cpu")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


@contextmanager
def process_group(requested_device: str | None = None) -> Iterator[Distributed]:
    """This process's ``Distributed`` (the process group joined when torchrun launched several:
    nccl on GPUs, gloo on CPUs, rendezvous from torchrun's MASTER_ADDR and MASTER_PORT), left
    when the block ends."""
    rank, world_size, local_rank = launched_ranks()
    device = resolve_device(requested_device, local_rank)
    if world_size == 1:
        yield Distributed(device=device)
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        yield Distributed(rank, world_size, local_rank, device)
    finally:
        dist.destroy_process_group()
