"""The one place that chooses between GPU and CPU, and reads torchrun's ranks.

`resolve_device("auto" | "cpu" | "cuda" | "cuda:N")` serves k-means, the RQ-VAE and generation; training leaves
the device to the Trainer. `Distributed` is evaluation's process group under `torchrun` (a single process
without it); `in_shares` splits a computation across whichever process group runs (evaluation's or the Trainer's).
"""

import os
import sys
import time
from contextlib import contextmanager

from config import DEVICES

from .io import PipelineError


def resolve_device(setting: str = "auto", local_rank: int = 0, cpu_threads: int = 0) -> str:
    """"auto": this process's GPU when torch sees one, else the CPU. An explicit "cuda" on a machine without one
    fails here, in one line, not deep inside a stage. On the CPU, `cpu_threads` > 0 sets torch's thread count."""
    import torch

    kind = setting.split(":")[0]
    if kind not in DEVICES:
        raise PipelineError(f"device {setting!r}: use one of {', '.join(DEVICES)} (or cuda:N)")
    cuda = torch.cuda.is_available()
    if kind == "cuda" and not cuda:
        raise PipelineError(f"device {setting!r} asked for, but torch sees no CUDA GPU here; use auto or cpu")
    if kind == "cuda" or (kind == "auto" and cuda):
        return setting if ":" in setting else f"cuda:{local_rank}"
    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    return "cpu"


BUSY_SHARE = 0.5  # of the cores, kept busy by other processes: then the machine counts as shared


def busy_cores(seconds: float = 0.25) -> float:
    """How many cores other processes keep busy right now (this one is idle while it measures): /proc/stat over
    `seconds`. Not the load average, which still counts the stage that ran just before for a minute."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    total = max(total1 - total0, 1)
    return (total - (idle1 - idle0)) / total * (os.cpu_count() or 1)


def share_cores_gracefully() -> str | None:
    """Before torch is imported (its OpenMP runtime reads the policy once): on a machine that other processes keep
    busy, threads waiting at a barrier sleep (OMP_WAIT_POLICY=PASSIVE) instead of spinning, which took the default
    2-thread training from 3.3x slower beside one busy process to none slower, at a cost on an idle machine (0.23
    against 0.14 s per step), where they keep spinning. The thread count stays what --tiger.threads says, so the
    weights do not depend on the load; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept. Returns the policy
    set, if any (none once torch is imported: too late). bench/bench_threads.py measures the policies side by side
    (README "Speed")."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return None
    if "torch" in sys.modules:  # its OpenMP runtime has read the policy already: measuring would only cost time
        return None
    if busy_cores() <= BUSY_SHARE * (os.cpu_count() or 1):
        return None
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "PASSIVE"


def process_group() -> tuple[int, int]:
    """(rank, world size) of torch.distributed's process group; (0, 1) without one (torch is not imported for it)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def in_shares(fn, items: list):
    """fn(items), an array with one row per item, computed in shares by the ranks of the process group (rank r
    computes items[r::world]) and gathered on every rank; every rank must call it with the same items. Without a
    group, fn(items). Under torchrun the e5 embedding of a run's titles took one rank its whole time while the
    others waited at a barrier."""
    import numpy as np

    rank, world = process_group()
    if world == 1:
        return fn(items)
    import torch.distributed as dist

    parts = [None] * world
    dist.all_gather_object(parts, fn(items[rank::world]))
    order = np.concatenate([np.arange(r, len(items), world) for r in range(world)])
    out = np.concatenate([part for part in parts if len(part)])  # a rank with no share may give shape (0,)
    out[order] = out.copy()
    return out


def group_barrier() -> None:
    """Wait for every rank of the process group (none without one)."""
    if process_group()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


class Distributed:
    """Rank, world size and device from torchrun's environment (a single process without it). A process group that
    already exists (train_tiger.py's Trainer ran first in this process) is used, not started again."""

    def __init__(self, device: str = "auto", cpu_threads: int = 0):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0
        self.device = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")), cpu_threads)
        self.owns_group = False
        if self.world > 1:
            import torch
            import torch.distributed as dist

            if self.device.startswith("cuda"):
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.startswith("cuda") else "gloo")
                self.owns_group = True

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (it builds and writes the shared caches: song index, e5 title embeddings),
        then the other ranks run it and read them (accelerate's `main_process_first`)."""
        if self.world > 1 and not self.is_main:
            import torch.distributed as dist

            dist.barrier()
        yield
        if self.world > 1 and self.is_main:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj) -> list | None:
        """Every rank's `obj` on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def close(self) -> None:
        """No barrier: nothing runs after rank 0's report, and after an error one could hang."""
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
