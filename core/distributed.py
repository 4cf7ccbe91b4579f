"""DDP in a handful of functions: process-group setup from torchrun's environment, device
choice, agreement between ranks, and a free rendezvous port per run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


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
