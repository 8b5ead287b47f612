import json

import pytest

from playlist_gen.collisions import cluster_stats, largest_clusters
from playlist_gen.io import PipelineError
from tests.test_quantize import args, read_jsonl, write_tiny_data

RQVAE_FAST = ["--rqvae.epochs=12", "--rqvae.batch_size=32", "--rqvae.vocab_size=8", "--rqvae.hidden_dims=32",
              "--rqvae.latent_dim=8", "--rqvae.device=cpu"]


def test_cluster_stats_by_hand():
    ids = {"a": (0, 0), "b": (0, 0), "c": (0, 0), "d": (1, 2), "e": (1, 3), "f": (1, 3)}
    s = cluster_stats(ids)
    assert s["n_tuples"] == 3 and s["max_size"] == 3 and s["singletons"] == 1
    assert s["share_sharing"] == pytest.approx(5 / 6) and s["largest_share"] == pytest.approx(0.5)
    assert s["mean_size"] == 2 and s["median_size"] == 2 and s["size_histogram"] == {1: 1, 2: 1, 3: 1}
    top = largest_clusters(ids, {"a": ("Song A", "Artist")}, top=2)
    assert [c["size"] for c in top] == [3, 2]
    assert top[0]["songs"][0] == {"song_id": "a", "name": "Song A", "artist": "Artist"}
    assert top[0]["songs"][1]["name"] == "unknown"  # a song without a name row is still listed


def test_both_methods_side_by_side(tmp_path, capsys):
    import debug_collisions
    import train_rq_kmeans
    import train_rqvae

    ids = write_tiny_data(tmp_path / "data")
    train_rqvae.main(args(tmp_path) + RQVAE_FAST)
    rows = read_jsonl(tmp_path / "out" / "song_semantic_ids.jsonl")
    assert sorted(r["song_id"] for r in rows) == sorted(ids)
    meta = json.loads((tmp_path / "out" / "semantic_ids_meta.json").read_text())
    assert meta["method"] == "rqvae" and meta["n_val"] > 0 and len(meta["history"]) == 12
    assert 1 <= meta["best_epoch"] <= 12 and len(meta["usage"]) == 2
    train_rq_kmeans.main(args(tmp_path) + ["--rqkmeans.vocab_size=8"])
    capsys.readouterr()

    reports = debug_collisions.main(args(tmp_path))
    table = capsys.readouterr().out
    assert list(reports) == ["rqkmeans", "rqvae"]  # the current IDs first
    assert "rqkmeans (current)" in table and "rqvae" in table and "Average Cosine Similarity" in table
    saved = json.loads((tmp_path / "out" / "collisions_report.json").read_text())
    assert saved["current_method"] == "rqkmeans" and set(saved["methods"]) == {"rqkmeans", "rqvae"}
    for rep in saved["methods"].values():
        assert rep["n_songs"] == len(ids) and rep["songs_compared"] == len(ids)
        assert 0.5 < rep["avg_cosine"] <= 1.0  # the codes reproduce the vectors' direction
        assert rep["n_tuples"] <= 64 and len(rep["largest_clusters"]) == 5
    assert (tmp_path / "out" / "cluster_sizes.png").read_bytes()[:4] == b"\x89PNG"


def test_report_tolerates_missing_song_names(tmp_path, capsys):
    import debug_collisions
    import train_rq_kmeans

    write_tiny_data(tmp_path / "data")
    (tmp_path / "data" / "gen_song_info.csv").unlink()
    train_rq_kmeans.main(args(tmp_path) + ["--rqkmeans.vocab_size=8"])
    reports = debug_collisions.main(args(tmp_path))
    assert list(reports) == ["rqkmeans"]
    assert reports["rqkmeans"]["largest_clusters"][0]["songs"][0]["name"] == "unknown"


def test_report_without_ids_says_what_to_run(tmp_path):
    import debug_collisions

    write_tiny_data(tmp_path / "data")
    with pytest.raises(PipelineError, match="train_rq_kmeans.py"):
        debug_collisions.main(args(tmp_path))
