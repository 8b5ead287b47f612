import os
from pathlib import Path

import pytest

# The suite runs in two pytest-xdist workers on two cores (pyproject addopts): each worker, and every process it
# starts, computes on one thread, so neither spins at the other's OpenMP barriers. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_MPD = ROOT.parent / "shared" / "data" / "mpd_dev.json.gz"
# xdist starts worker 1 on the 1st and 3rd module, worker 2 on the 2nd and 4th; then whichever has fewer than two
# tests left takes the next
LONGEST_FIRST = ("test_end_to_end.py", "test_training.py", "test_config.py", "test_cli.py", "test_service.py",
                 "test_manifest.py", "test_gpu_check.py", "test_new_songs.py")


def pytest_configure(config):
    """In each worker (not in xdist's controller): import torch and the Trainer, which nearly every worker needs, then
    gc.freeze() what exists, so the gc.collect() that accelerate runs at the end of every training (and Python's own
    full collections) no longer walks these libraries' objects: 0.34 s of a 1.5 s tiny training before."""
    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "numprocesses", None) in (None, 0):
        import gc

        import torch  # noqa: F401
        import transformers.trainer  # noqa: F401

        gc.collect()
        gc.freeze()


def pytest_collection_modifyitems(config, items):
    """The longest modules first, so the two workers finish together. Each module runs whole on one worker
    (`--dist loadfile --no-loadscope-reorder`: in this order, not by test count), so its module-scoped pipeline is
    built once. (`loadgroup` with xdist_group marks did not group at all under pytest 9.2: xdist 3.8 sets
    `item._nodeid`, which pytest no longer reads.)"""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def mpd_path():
    if not SHARED_MPD.exists():
        pytest.skip("../shared/data/mpd_dev.json.gz not present")
    return SHARED_MPD
