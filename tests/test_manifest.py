"""Stage manifests: no stage runs on a half-written, stale or mixed set of files, and user data is never lost.

One small pipeline (demo world, RQ-KMeans IDs, corpus, a tiny T5) is built once; each test works on a copy."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate_tiger
import generate_playlist
import prepare_corpus
import prepare_data
import train_rq_kmeans
import train_tiger
from playlist_gen import data, manifest
from playlist_gen.cli import parse_config
from playlist_gen.io import PipelineError
from tests.conftest import ROOT

SMALL_DEMO = ["--source=demo", "--demo.n_songs=300", "--demo.n_artists=30", "--demo.n_playlists=200", "--demo.dim=8",
              "--vectors.quality_sample=100"]
TINY = ["--tiger.d_model=32", "--tiger.d_ff=64", "--tiger.num_layers=1", "--tiger.num_decoder_layers=1",
        "--tiger.num_heads=2", "--tiger.d_kv=16", "--tiger.batch_size=16", "--tiger.sp_vocab_size=1000",
        "--tiger.threads=1", "--tiger.max_steps=4", "--tiger.eval_steps=2", "--tiger.save_steps=2",
        "--tiger.ensemble=1"]
EVAL = ["--eval.k=10", "--eval.n_clusters=5", "--eval.methods=model,popularity", "--eval.examples=1"]


def dirs(root) -> list[str]:
    return [f"--data_dir={root / 'data'}", f"--output_dir={root / 'out'}", f"--model_dir={root / 'models'}"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    args = dirs(root)
    prepare_data.main(args + SMALL_DEMO)
    train_rq_kmeans.main(args + ["--rqkmeans.vocab_size=8"])
    prepare_corpus.main(args)
    train_tiger.main(args + TINY)
    return root


@pytest.fixture
def world(built, tmp_path):
    """A copy of the built pipeline (copy2 keeps mtimes, as `cp -p` does) and its arguments."""
    shutil.copytree(built, tmp_path / "w")
    return tmp_path / "w", dirs(tmp_path / "w")


def refused(fn, args, needle):
    with pytest.raises(PipelineError) as e:
        fn(args)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_every_stage_writes_a_manifest_that_matches_its_files(world):
    root, args = world
    cfg = parse_config(args)
    for product in ("data", "semantic_ids", "corpus", "model"):
        m = json.loads(cfg.manifest_path(product).read_text())
        assert m["complete"] and len(m["id"]) == 16 and m["config"]["seed"] == 42
        for key, record in m["files"].items():
            assert manifest.sha256_file(manifest.path_of(cfg, key)) == record["sha256"], key
    model = json.loads(cfg.manifest_path("model").read_text())
    corpus = json.loads(cfg.manifest_path("corpus").read_text())
    assert model["upstream"]["corpus"] == corpus["id"] and "output_dir/train.tsv" in model["inputs"]
    meta = json.loads((cfg.final_model_dir / "tiger_meta.json").read_text())
    assert meta["trained_on"] == {"corpus": corpus["id"], "semantic_ids": model["upstream"]["semantic_ids"]}


def test_new_semantic_ids_after_training_stop_every_later_stage(world):
    """train_rq_kmeans.py --seed=7 (same K) after training: the model and corpus belong to the old IDs."""
    root, args = world
    train_rq_kmeans.main(args + ["--rqkmeans.vocab_size=8", "--seed=7"])
    stale = "came from other files than"
    refused(train_tiger.main, args + TINY, "re-run `python prepare_corpus.py`")
    refused(evaluate_tiger.main, args + EVAL, stale)
    refused(generate_playlist.main, args + ["--title=chill"], "re-run `python prepare_corpus.py`")
    prepare_corpus.main(args)
    refused(evaluate_tiger.main, args + EVAL, "re-run `python train_tiger.py`")
    refused(generate_playlist.main, args + ["--title=chill"], "re-run `python train_tiger.py`")
    refused(train_tiger.main, args + TINY, "checkpoints of another run (the corpus, the semantic IDs)")  # not resumed
    train_tiger.main(args + TINY + ["--tiger.resume=false"])
    summary = json.loads(parse_config(args).train_summary_path.read_text())
    assert summary["resumed_from_step"] is None
    evaluate_tiger.main(args + EVAL)


def test_folders_of_two_runs_are_named_as_such_and_the_message_names_only_files_that_exist(world, tmp_path):
    """Another run's data with this run's outputs: say the folders may be of different runs, before advising a
    rerun that would replace this run's IDs; every path the message names exists."""
    root, args = world
    other = tmp_path / "other"
    prepare_data.main(dirs(other) + SMALL_DEMO + ["--seed=1"])
    mixed = [f"--data_dir={other / 'data'}", *args[1:]]
    for fn in (prepare_corpus.main, train_tiger.main, evaluate_tiger.main):
        with pytest.raises(PipelineError) as e:
            fn(mixed + EVAL)
        message = str(e.value)
        assert "belong to different runs" in message and "which replaces" in message, message
        for path in re.findall(r"(/[^\s():,]+)", message):
            assert Path(path).exists(), (path, message)


def test_a_new_split_after_training_is_not_scored_with_the_old_model(world):
    """prepare_corpus.py --seed=5 --corpus.split=random put training playlists into the test split, silently."""
    root, args = world
    prepare_corpus.main(args + ["--seed=5", "--corpus.split=random"])
    refused(evaluate_tiger.main, args + EVAL, "re-run `python train_tiger.py`")


def test_a_stage_killed_midway_leaves_no_manifest_for_later_stages(world, monkeypatch):
    """A kill after the new playlists were written, beside the old vectors and report: no stage runs on the mix,
    and the rerun may overwrite the half-written files (they are the stage's own) and removes stray temp files."""
    root, args = world
    cfg = parse_config(args)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "write_song_vectors", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_data.main(args + SMALL_DEMO + ["--seed=3"])
    refused(train_rq_kmeans.main, args, "did not finish")
    refused(prepare_corpus.main, args, "`python prepare_data.py --source=demo` did not finish")
    refused(generate_playlist.main, args + ["--title=chill"], "did not finish")
    stray = cfg.playlist_song_path.with_name(".gen_playlist_song.csv.x1.tmp")
    stray.write_text("left by kill -9")
    monkeypatch.undo()
    prepare_data.main(args + SMALL_DEMO + ["--seed=3"])
    assert not stray.exists() and json.loads(cfg.manifest_path("data").read_text())["complete"]
    refused(prepare_corpus.main, args, "re-run `python train_rq_kmeans.py`")


def test_built_vectors_are_kept_apart_and_rebuilt_when_the_playlists_change(world):
    """--source=csv without vectors: built vectors go to song_vectors_built.csv, never the user's file name, and an
    edit of the playlists makes every later stage ask for prepare_data.py, which rebuilds them."""
    root, args = world
    user = root / "mine"
    user.mkdir()
    for name in ("gen_playlist_info.csv", "gen_playlist_song.csv", "gen_song_info.csv"):
        shutil.copy(root / "data" / name, user / name)
    args = [f"--data_dir={user}", *args[1:]]
    cfg = parse_config(args)
    prepare_data.main(args + ["--source=csv", "--vectors.dim=8", "--vectors.quality_min_count=3"])
    assert cfg.built_vectors_path.exists() and not cfg.song_vectors_path.exists()
    built = manifest.sha256_file(cfg.built_vectors_path)
    train_rq_kmeans.main(args + ["--rqkmeans.vocab_size=8"])
    prepare_corpus.main(args)
    lines = cfg.playlist_song_path.read_text().splitlines()
    cfg.playlist_song_path.write_text("\n".join(lines[: len(lines) // 2]) + "\n")  # the user edits the playlists
    refused(prepare_corpus.main, args, "changed since `python prepare_data.py --source=csv`")
    prepare_data.main(args + ["--source=csv", "--vectors.dim=8", "--vectors.quality_min_count=3"])
    report = json.loads(cfg.data_report_path.read_text())
    assert report["vectors"]["method"] == "sqrtlen" and manifest.sha256_file(cfg.built_vectors_path) != built
    assert not cfg.song_vectors_path.exists()
    refused(prepare_corpus.main, args, "re-run `python train_rq_kmeans.py`")


def test_given_vectors_and_user_files_are_never_overwritten(world):
    root, args = world
    user = root / "mine"
    shutil.copytree(root / "data", user, ignore=shutil.ignore_patterns("manifests", "data_report.json", "configs"))
    args = [f"--data_dir={user}", *args[1:]]
    before = {p.name: manifest.sha256_file(p) for p in user.iterdir()}
    with pytest.raises(PipelineError, match=r"gen_playlist_info.csv was not written by prepare_data.py .* "
                                            r"--source=demo would overwrite it; move your files"):
        prepare_data.main(args + SMALL_DEMO)
    report = prepare_data.main(args + ["--source=csv"])
    assert report["vectors"]["method"] == "given"
    assert {p.name: manifest.sha256_file(p) for p in user.iterdir() if p.is_file() and p.suffix == ".csv"} == before


def test_vectors_built_by_an_older_version_are_not_taken_for_given_ones(world):
    root, args = world
    cfg = parse_config(args)
    shutil.rmtree(cfg.manifest_path("data").parent)
    report = json.loads(cfg.data_report_path.read_text())
    cfg.data_report_path.write_text(json.dumps({**report, "vectors": {"method": "sqrtlen"}}))
    refused(prepare_data.main, args + ["--source=csv"], "was built by an earlier prepare_data.py")


def test_outputs_made_before_manifests_can_be_adopted(world):
    root, args = world
    cfg = parse_config(args)
    for product in ("data", "semantic_ids", "corpus", "model"):
        cfg.manifest_path(product).unlink()
    refused(evaluate_tiger.main, args + EVAL, "or it ran before manifests existed); run `python train_tiger.py`")
    out = subprocess.run([sys.executable, "-m", "playlist_gen.manifest", *args], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "data, semantic_ids, corpus, model" in out.stdout, out.stderr
    evaluate_tiger.main(args + EVAL)


def test_the_cli_checks_stamps_and_hashes_nothing_it_need_not(world, monkeypatch, capsys):
    """generate_playlist.py must print its first playlist fast: on its path, manifests and file stamps only."""
    root, args = world
    monkeypatch.setattr(manifest, "sha256_file", lambda path: pytest.fail(f"hashed {path}"))
    # e5 reads its own cache of embeddings, not a manifest: without it no title is embedded (3 s of this module)
    generate_playlist.main(args + ["--title=chill", "--num_songs=3", "--recommend.e5_weight=0"])
    assert capsys.readouterr().out.startswith("🎵 chill")


def test_a_changed_model_file_is_named_with_the_stage_to_rerun(world):
    root, args = world
    cfg = parse_config(args)
    weights = cfg.final_model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    refused(generate_playlist.main, args + ["--title=chill"], f"{weights} changed since `python train_tiger.py`")
    refused(evaluate_tiger.main, args + EVAL, f"{weights} changed since `python train_tiger.py`")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors", "tokenizer_config.json"])
def test_a_damaged_model_file_is_named_by_the_loaders(world, name):
    """Also without a manifest to compare with (adopted, or copied by hand): one line naming the file."""
    from playlist_gen.modeling import load_tiger_runtime

    root, args = world
    model_dir = parse_config(args).final_model_dir
    path = model_dir / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(PipelineError, match=rf"{name} is damaged \(.*\); re-run `python train_tiger.py`"):
        load_tiger_runtime(model_dir)


def test_damaged_codebooks_are_named(world):
    import debug_collisions
    from playlist_gen.kmeans import load_codebooks

    root, args = world
    cfg = parse_config(args)
    path = cfg.method_dir("rqkmeans") / "codebooks.npz"
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(PipelineError, match=r"codebooks.npz is damaged \(BadZipFile"):
        load_codebooks(path, "re-run `python train_rq_kmeans.py`")
    refused(debug_collisions.main, args, "codebooks.npz changed since `python train_rq_kmeans.py`")


def test_make_demo_keeps_to_demo_and_make_clean_spares_user_folders(tmp_path):
    """`make demo` wrote the demo world into data/, where the README tells users to put their CSVs, and
    `make clean` ran rm -rf data."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")

    def dry_run(target):
        out = subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    stages = [line for line in dry_run("demo") if line.startswith(str(tmp_path / "venv" / "bin" / "python"))]
    assert len(stages) == 7
    for line in stages:
        assert "--data_dir=demo/data --output_dir=demo/outputs --model_dir=demo/models" in line, line
    removed = " ".join(line for line in dry_run("clean") if line.startswith("rm "))
    assert "demo" in removed.split() and not {"data", "outputs", "models"} & set(removed.split())


@pytest.mark.parametrize("damage", [lambda m: m.pop("files"), lambda m: m["files"].clear() or m["files"].update(x=1),
                                    lambda m: m.pop("id"), lambda m: m["inputs"].update(x={"product": "data"})])
def test_a_manifest_with_missing_keys_is_named_not_a_traceback(world, damage):
    root, args = world
    cfg = parse_config(args)
    path = cfg.manifest_path("corpus")
    m = json.loads(path.read_text())
    damage(m)
    path.write_text(json.dumps(m))
    refused(train_tiger.main, args + TINY, f"{path}: a damaged manifest (keys missing or of the wrong type); re-run")
