import os
from pathlib import Path

import pytest

# The suite runs in two pytest-xdist workers on two cores (pyproject addopts): each worker, and every process it
# starts, computes on one thread, so neither spins at the other's OpenMP barriers. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_MPD = ROOT.parent / "shared" / "data" / "mpd_dev.json.gz"
LONGEST_FIRST = ("test_end_to_end.py", "test_cli.py", "test_training.py", "test_service.py", "test_new_songs.py",
                 "test_manifest.py")


def pytest_collection_modifyitems(config, items):
    """The longest modules first, so the two workers finish together (each module is one xdist group: its
    module-scoped pipeline is built once)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.path.name))


@pytest.fixture
def mpd_path():
    if not SHARED_MPD.exists():
        pytest.skip("../shared/data/mpd_dev.json.gz not present")
    return SHARED_MPD
