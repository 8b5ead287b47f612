"""Helpers shared by the benchmarks: the machine's fp32 matmul rate, load average, a timer."""

import os
import platform
import time

import torch


def matmul_gflops(n: int = 4096, reps: int = 3, dtype=torch.float32, clock=time.perf_counter) -> float:
    """Best-of-`reps` rate of one n x n x n matrix product, in GFLOP/s (2 n^3 per product), timed by `clock`
    (wall time; `time.process_time` gives the rate in process CPU time)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = clock()
        torch.mm(a, b)
        best = min(best, clock() - t0)
    return 2 * n**3 / best / 1e9


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"threads {torch.get_num_threads()}, load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
