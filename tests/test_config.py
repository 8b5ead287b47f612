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
    (["--rqkmeans.vocab_sise=3"], "did you mean --rqkmeans.vocab_size"),
    (["--rqkmeans.vocab_size=big"], "type int"),
    (["--levels=3"], "ambiguous"),
    (["--rqkmeans.normalize=maybe"], "type bool"),
    (["positional"], "--key=value"),
    (["--data_dir="], "is empty (it would mean the current folder)"),
    (["--output_dir= "], "is empty"),
    (["--rqkmeans.levels=50"], "<= 26"),
    (["--tiger.batch_size=100000000000000000000"], "<= 1048576"),
    (["--generate.temperature=1e-300"], ">= 0.01"),
    (["--demo.n_artists=100000", "--demo.n_songs=50"], "n_artists <= n_songs"),
    (["--tiger.model_name=tests"], "is not a T5 model folder (its config.json says model_type None)"),
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
    for key in ("--data_dir='data'", "--rqkmeans.vocab_size=0", "--tiger.d_model=128", "--generate.pick='sample'"):
        assert key in out


def test_save_config_round_trip(tmp_path):
    cfg = parse_config([f"--output_dir={tmp_path}", "--seed=7"])
    path = save_config(cfg, "unit")
    saved = json.loads(path.read_text())
    assert saved["seed"] == 7 and saved["stage"] == "unit" and saved["rqkmeans"]["levels"] == cfg.rqkmeans.levels


def test_script_unknown_key_exits_2():
    r = subprocess.run([sys.executable, "train_rq_kmeans.py", "--nope=1"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "valid keys" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--tiger.lr=-1"], "--tiger.lr=-1.0: must be > 0"),
    (["--tiger.lr=nan"], "--tiger.lr=nan: must be a finite number"),
    (["--tiger.batch_size=0"], "--tiger.batch_size=0: must be >= 1"),
    (["--tiger.dropout=1.5"], "--tiger.dropout=1.5: must be >= 0, < 1"),
    (["--tiger.lr_scheduler=nope"], "--tiger.lr_scheduler='nope': choose one of linear | cosine"),
    (["--eval.k=0"], "--eval.k=0: must be >= 1"),
    (["--generate.num_beams=0"], "--generate.num_beams=0: must be >= 1"),
    (["--mode=sample", "--temperature=0"], "--generate.temperature=0.0: must be >= 0.01"),
    (["--seed=-1"], "--seed=-1: must be >= 0"),
    (["--tiger.epochs=0"], "--tiger.epochs=0.0: must be > 0"),
    (["--eval.methods=model,nope"], "--eval.methods='model,nope': give a comma-separated list of model | fusion"),
    (["--rqvae.hidden_dims=256,x"], "--rqvae.hidden_dims='256,x': give comma-separated positive integers"),
    (["--tiger.model_name=typo"], "--tiger.model_name='typo': use scratch or a local folder"),
    (["--corpus.val_fraction=0.5", "--corpus.test_fraction=0.5"], "need their sum below 1"),
    (["--tiger.eval_steps=3", "--tiger.save_steps=4"], "need save_steps a multiple of eval_steps"),
    (["--data.title_col= "], "--data.title_col=' ': must not be empty"),
])
def test_values_outside_the_declared_ones_exit_2_in_one_line(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and err.count("\n") == 1, err


def test_a_file_where_a_folder_belongs_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit):
        parse_config([f"--output_dir={tmp_path / 'f'}"])
    assert capsys.readouterr().err == f"error: --output_dir='{tmp_path / 'f'}': is a file; give a folder\n"


def test_cuda_without_a_gpu_is_refused_with_the_options(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        parse_config(["--rqkmeans.device=cuda"])
    assert "--rqkmeans.device='cuda': device 'cuda' asked for, but torch sees no CUDA GPU" in capsys.readouterr().err


def test_every_field_has_a_description_and_allowed_values_that_match_the_code():
    import dataclasses

    from transformers import SchedulerType

    import config

    for section in dataclasses.fields(Config()):
        fields = dataclasses.fields(section.type) if dataclasses.is_dataclass(section.type) else [section]
        for f in fields:
            assert f.metadata.get("help"), f"{section.name}.{f.name} has no description"
    assert set(config.LR_SCHEDULERS) == {s.value for s in SchedulerType}
    from playlist_gen.t5_runtime import ACTIVATIONS

    assert all(ff.split("-")[-1] in ACTIVATIONS or ff == "gated-gelu" for ff in config.FEED_FORWARD)


def test_help_shows_own_sections_first_with_descriptions_and_allowed_values():
    out = subprocess.run([sys.executable, "train_tiger.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    sections = [line for line in out.stdout.splitlines() if line.startswith("[")]
    assert sections[:2] == ["[paths and seed]", "[tiger] Stage 3, train_tiger.py: the T5 title -> semantic-ID model."]
    assert "  --tiger.lr=0.002  (> 0)\n      peak learning rate" in out.stdout
    assert "  --tiger.objective='tuples'  (tuples | sets | sequence)" in out.stdout
    assert "[data]" in out.stdout  # the other stages' options follow


def test_help_imports_no_heavy_package():
    """--help of train_tiger.py took 4.3 s importing transformers; now no script imports torch, transformers or pandas
    before its options are parsed (each script's --help in turn, in one process)."""
    scripts = ["prepare_data.py", "train_rq_kmeans.py", "train_rqvae.py", "debug_collisions.py", "prepare_corpus.py",
               "train_tiger.py", "evaluate_tiger.py", "generate_playlist.py"]
    code = ("import runpy, sys\nfor script in sys.argv[1:]:\n    sys.argv = [script, '--help']\n"
            "    try:\n        runpy.run_path(script, run_name='__main__')\n    except SystemExit:\n        pass\n"
            "    print(script, sorted({'torch', 'transformers', 'pandas'} & set(sys.modules)), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, *scripts], cwd=ROOT, capture_output=True, text=True)
    assert out.stderr.splitlines() == [f"{s} []" for s in scripts], out.stderr[-2000:]
