"""Every stage on a small demo world, with a minimum score (as the Hugging Face example tests assert rouge1 >= 10):
a regression in quality fails CI, not only a crash. Training and evaluation run under `torchrun` with two
processes (one launch for both), and evaluation again in one process: the two must agree."""

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import evaluate_tiger
import prepare_corpus
import prepare_data
import train_rq_kmeans
from config import Config
from playlist_gen import recommend
from playlist_gen.recommend import encode
from tests.reference import load_tiger

ROOT = Path(__file__).resolve().parents[1]
WORLD = ["--demo.n_songs=540", "--demo.n_artists=54", "--demo.n_playlists=600"]
MODEL = ["--tiger.d_model=64", "--tiger.d_ff=256", "--tiger.num_heads=2", "--tiger.num_layers=1",
         "--tiger.num_decoder_layers=1", "--tiger.epochs=2", "--tiger.batch_size=64", "--tiger.lr=4e-3",
         "--tiger.eval_steps=25", "--tiger.save_steps=25", "--tiger.threads=1", "--tiger.ensemble=1"]
# 2 processes x 64: twice the default batch at twice the learning rate, half the steps (and their overheads)
EVAL = ["--generate.cpu_threads=1", "--eval.examples=3"]
METRICS = ("shown_precision@20", "shown_ndcg@20", "shown_recall@20", "shown_artists", "shown_clusters",
           "shown_popularity_rank", "top_precision@20", "top_artists", "rouge_l", "bleu4", "tuple_f1",
           "cluster_precision", "cluster_recall", "cluster_f1", "expanded_songs", "r_precision", "ndcg@100",
           "recall@100", "validity", "distinct_clusters", "distinct_artists", "catalogue_coverage")


def torchrun_stages(train_args: list[str], eval_args: list[str], timeout: int = 600) -> None:
    """`torchrun --standalone --nproc_per_node=2 --start-method=fork --run-path tests/torchrun_stages.py ...`:
    torchrun's own main (its rendezvous, agent and rank environment) called in this process, whose two ranks are
    forked from it with torch and transformers already imported (a torchrun subprocess imported them again in its
    launcher and in two fresh interpreters). A rank's error fails the test with its traceback; a hang, after
    `timeout` seconds."""
    import matplotlib.figure  # noqa: F401  (rank 0 draws the loss and trade-off plots, this process the latter)
    from torch.distributed import run

    def expire(signum, frame):
        raise TimeoutError(f"torchrun's two ranks still running after {timeout} s")

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                                                   signal.SIGALRM)}
    environ = dict(os.environ)
    signal.signal(signal.SIGALRM, expire)
    signal.alarm(timeout)
    try:
        run.main(["--standalone", "--nproc_per_node=2", "--start-method=fork", "--run-path",
                  str(ROOT / "tests" / "torchrun_stages.py"), *train_args, "--", *eval_args])
    finally:
        signal.alarm(0)
        for s, handler in handlers.items():  # torchrun's agent handles these while it runs
            signal.signal(s, handler)
        os.environ.clear()  # and sets TORCHELASTIC_SIGNALS_TO_HANDLE
        os.environ.update(environ)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")  # torchrun's @record: pytest's captured stderr
def test_every_stage_on_demo_data_beats_the_baselines(tmp_path, capsys, monkeypatch):
    args = [f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}", f"--model_dir={tmp_path / 'models'}"]
    cfg = Config(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), model_dir=str(tmp_path / "models"))
    prepare_data.main(args + ["--source=demo"] + WORLD)
    train_rq_kmeans.main(args)
    prepare_corpus.main(args + ["--corpus.test_fraction=0.15"])
    torchrun_stages(args + MODEL, args + EVAL)

    summary = json.loads(cfg.train_summary_path.read_text())
    assert summary["world_size"] == 2
    assert summary["val_loss"] == pytest.approx(summary["best_eval_loss"], rel=0.05)  # not scaled by 2 processes
    assert load_tiger(cfg.final_model_dir)[2]["levels"] == 2
    last = summary["steps"] // 25 * 25
    assert {f"checkpoint-{last}"} <= {p.name for p in cfg.checkpoint_dir.glob("checkpoint-*")}
    with np.load(cfg.e5_cache_path) as z:  # the training titles, embedded in shares by the two ranks, in order
        texts, embeddings = z["texts"].tolist(), z["embeddings"]
    assert np.allclose(embeddings[:2], encode(texts[:2]), atol=1e-5)  # one title of each rank
    two = json.loads(cfg.metrics_path.read_text())
    shutil.move(cfg.metrics_path, cfg.metrics_path.with_suffix(".two"))

    # the ranks cached the training titles' and the test titles' embeddings: one process embeds none again
    monkeypatch.setattr(recommend, "encode", lambda texts: pytest.fail(f"embedded {len(texts)} titles again"))
    evaluate_tiger.main(args + EVAL)
    table = json.loads(cfg.metrics_path.read_text())
    assert "ndcg@20" in capsys.readouterr().out
    assert set(table) == set(two)  # every method and policy: 2 processes score what 1 does
    assert all(table[key] == pytest.approx(two[key]) for key in table if key != "shown_policies")
    assert all(table["shown_policies"][p] == pytest.approx(two["shown_policies"][p]) for p in two["shown_policies"])
    examples = cfg.evaluation_results_path.read_text()
    assert examples.count("=== ") == 3 and "fusion (" in examples

    policies = table.pop("shown_policies")
    assert set(table) == {"model", "fusion", "popularity", "title_knn", "e5_knn", "random_cluster"}
    assert set(policies) == {"diverse", "ranked", "sample", "cluster", "random", "popular", "weighted"}
    assert all(set(METRICS) <= set(scores) for scores in table.values())
    assert policies["ranked"]["shown_repeat"] == 1.0
    assert policies["ranked"]["shown_precision@20"] == pytest.approx(table["fusion"]["top_precision@20"])
    assert table["model"]["validity"] == 1.0
    ndcg = {method: scores["ndcg@100"] for method, scores in table.items()}
    assert table["model"]["playlists"] >= 80  # 15% of 600
    assert ndcg["model"] >= 0.6, ndcg  # measured 0.73 (fusion 0.80, title kNN 0.76, popularity 0.17, random 0.13)
    assert ndcg["model"] > 2 * ndcg["popularity"] and ndcg["model"] > 5 * ndcg["random_cluster"], ndcg
    assert ndcg["fusion"] > ndcg["title_knn"], ndcg
    # what a person is shown (the CLI's --pick, 20 songs) keeps the ranking's precision, and is not the same twice
    shown = {method: scores["shown_precision@20"] for method, scores in table.items()}
    assert shown["fusion"] >= 0.6 * table["fusion"]["top_precision@20"], (shown, table["fusion"])  # measured 0.66x
    assert shown["fusion"] > 2 * table["popularity"]["top_precision@20"], shown
    assert policies["sample"]["shown_repeat"] < 1 and policies["random"]["shown_precision@20"] < shown["fusion"]
