import json
import subprocess
import sys

import pytest

from config import Config
from playlist_gen.cli import parse_config, save_config
from tests.conftest import ROOT


def test_defaults_without_overrides():
    assert parse_config([]) == Config()


def test_dotted_and_short_overrides():
    cfg = parse_config(["--rqkmeans.vocab_size=256", "--output_dir=runs/run1", "--source", "demo",
                        "--title", "深夜emo 🌙", "--corpus.collapse_repeats", "--generate.top_p=0.5"])
    assert cfg.rqkmeans.vocab_size == 256
    assert cfg.output_dir == "runs/run1"
    assert cfg.data.source == "demo"
    assert cfg.generate.title == "深夜emo 🌙"
    assert cfg.corpus.collapse_repeats is True
    assert cfg.generate.top_p == 0.5
    assert cfg.metrics_path.as_posix() == "runs/run1/metrics.json"


def test_bool_values():
    assert parse_config(["--rqkmeans.normalize=false"]).rqkmeans.normalize is False
    assert parse_config(["--rqkmeans.normalize", "no"]).rqkmeans.normalize is False


@pytest.mark.parametrize("args,needle", [
    (["--rqkmeans.vocab_sise=3"], "valid keys"),
    (["--rqkmeans.vocab_size=big"], "type int"),
    (["--levels=3"], "ambiguous"),
    (["--rqkmeans.normalize=maybe"], "type bool"),
    (["positional"], "--key=value"),
])
def test_bad_overrides_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(args)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(["--help"], "desc")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for key in ("--data_dir='data'", "--rqkmeans.vocab_size=0", "--tiger.d_model=128", "--generate.pick='random'"):
        assert key in out


def test_save_config_round_trip(tmp_path):
    cfg = parse_config([f"--output_dir={tmp_path}", "--seed=7"])
    path = save_config(cfg, "unit")
    saved = json.loads(path.read_text())
    assert saved["seed"] == 7 and saved["stage"] == "unit" and saved["rqkmeans"]["levels"] == cfg.rqkmeans.levels


def test_script_unknown_key_exits_2():
    r = subprocess.run([sys.executable, "train_rq_kmeans.py", "--nope=1"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "valid keys" in r.stderr
