from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MPD = ROOT.parent / "shared" / "data" / "mpd_dev.json.gz"


@pytest.fixture
def mpd_path():
    if not SHARED_MPD.exists():
        pytest.skip("../shared/data/mpd_dev.json.gz not present")
    return SHARED_MPD
