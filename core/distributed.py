"""DDP in a handful of functions: process-group setup from torchrun's environment, device
choice, agreement between ranks, and a free rendezvous port per run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def pick_device(accelerator: str, local_rank: int = 0) -> torch.device:
    """`auto` takes this rank's GPU when CUDA is there, else the CPU."""
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("resources.accelerator is 'cuda' but no CUDA device is available")
    if accelerator in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(accelerator: str = "auto", threads: int | None = None) -> DistInfo:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU); a lone process
    without torchrun's environment runs as rank 0 of 1 with no group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(accelerator, local_rank)
    if threads is None:  # share the cores among this node's processes rather than oversubscribe
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        threads = max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any rank (the agreed stop decision)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


# --- an epoch's items across ranks ---------------------------------------------------------------


def shard_items(
    items: torch.Tensor, rank: int, world_size: int, layout: str = "strided"
) -> torch.Tensor:
    """This rank's share of `items` [N, ...] after padding them by wrapping around to a
    multiple of `world_size`, so every rank gets exactly `ceil(N / world_size)` items (N >= 1).
    With one rank, `items` unchanged.

    `layout="strided"` (an epoch's order): every `world_size`-th item from `rank`, so the k-th
    per-rank batches together hold the k-th global batch of the one-process order.
    `layout="blocks"` (one global batch): the rank-th contiguous block.

    Ranks must call it with the same `items` (e.g. one permutation drawn from a generator seeded
    the same on every rank). Raises ValueError for an empty `items` or a rank out of range.
    """
    if world_size == 1:
        return items
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    n = items.size(0)
    if n == 0:
        raise ValueError("cannot shard zero items across ranks")
    pad = (-n) % world_size
    if pad:
        wrap = torch.arange(pad, device=items.device) % n
        items = torch.cat([items, items[wrap]])
    if layout == "blocks":
        per_rank = items.size(0) // world_size
        return items[rank * per_rank : (rank + 1) * per_rank]
    if layout != "strided":
        raise ValueError(f"unknown layout {layout!r}; choose one of strided, blocks")
    return items[rank::world_size]


class RankBatches(Iterable[T]):
    """One epoch's batches on this rank with the number every rank yields (`len`).

    `make` returns the batch iterator; iterating yields exactly `count` batches or raises
    RuntimeError (a family whose batch counts drift would otherwise hang DDP). `count=None`
    means not known in advance (the family guarantees agreement another way).
    """

    def __init__(self, make: Callable[[], Iterator[T]], count: int | None):
        self.make = make
        self.count = count
        self._iterator: Iterator[T] | None = None

    def __next__(self) -> T:
        """The next batch of one pass (as if this were the generator `make` returns)."""
        if self._iterator is None:
            self._iterator = iter(self)
        return next(self._iterator)

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("this epoch's batch count is not known in advance")
        return self.count

    def __iter__(self) -> Iterator[T]:
        produced = 0
        for batch in self.make():
            produced += 1
            if self.count is not None and produced > self.count:
                raise RuntimeError(f"a family yielded more than its {self.count} batches")
            yield batch
        if self.count is not None and produced != self.count:
            raise RuntimeError(f"a family yielded {produced} batches, declared {self.count}")


def check_batch_counts(batches: Iterable[Any], device: torch.device, epoch: int) -> None:
    """Under DDP, raise on every rank if the ranks would train different numbers of batches
    this epoch (known when `batches` has a length); a no-op otherwise."""
    if not is_distributed():
        return
    try:
        count = len(batches)  # type: ignore[arg-type]
    except TypeError:
        count = -1
    counts = gather_objects(count)
    if -1 not in counts and len(set(counts)) > 1:
        raise RuntimeError(
            f"epoch {epoch}: ranks would train different numbers of batches {counts} and DDP "
            "would hang; shard with core.distributed.shard_items"
        )
