import json
import logging

import numpy as np
import pytest
import torch

from config import Config
from playlist_gen import manifest
from playlist_gen.io import PipelineError
from playlist_gen.kmeans import (
    FaissKMeans,
    TorchKMeans,
    code_usage,
    codebook_sizes,
    l2_normalize,
    make_kmeans,
    reconstruct,
    residual_kmeans,
    split_empty,
)
from playlist_gen.rqvae import recon_loss, split_indices, train_rqvae


def clustered(n=2000, d=16, centers=40, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    return (c[rng.integers(0, centers, n)] + noise * rng.normal(size=(n, d))).astype(np.float32)


def brute_inertia(X, centroids):
    d2 = ((X[:, None, :] - centroids[None]) ** 2).sum(-1)
    return d2.argmin(1), float(d2.min(1).sum())


@pytest.mark.parametrize("k", [8, 64])
def test_own_kmeans_objective_close_to_faiss(k):
    X = clustered(n=3000, d=24, centers=50, noise=0.5)
    ours = TorchKMeans(seed=3).fit(X, k, n_iter=15)
    theirs = FaissKMeans(seed=3).fit(X, k, n_iter=15)
    assert ours.inertia < theirs.inertia * 1.1
    assign, inertia = brute_inertia(X, ours.centroids)  # the reported assignment is the nearest centroid
    assert np.mean(assign == ours.assign) > 0.999
    assert inertia == pytest.approx(ours.inertia, rel=1e-3)
    assert len(ours.obj) == 15 and ours.obj[-1] <= ours.obj[0]


def test_duplicate_points_get_their_own_clusters():
    X = np.repeat(clustered(n=50, d=4, centers=5), 4, axis=0)  # every song 4 times: seeds must be distinct
    res = TorchKMeans(seed=0).fit(X, 50, n_iter=10)
    assert len(np.unique(res.assign)) == 50 and res.inertia < 1e-3  # 0 up to the |x|²-2x·c+|c|² rounding


def test_empty_cluster_is_split_from_a_large_one():
    points = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0], [5.0, 5.0]])
    assign = torch.tensor([0, 0, 0, 0, 1])
    centroids = torch.tensor([[0.5, 0.5], [5.0, 5.0], [9.0, 9.0]])
    counts = np.array([4.0, 1.0, 0.0])
    assert split_empty(centroids, counts, assign, points, np.random.default_rng(0)) == 1
    new = centroids[2].tolist()
    assert new in ([1.0, 0.0], [0.0, 1.0])  # a member of the only cluster with more than one point
    assert assign.tolist().count(2) == 2 and points[assign == 2].tolist() == [new, new]  # with its copy
    assert counts.tolist() == [2.0, 1.0, 2.0]


def test_residual_round_trip_and_levels_reduce_error():
    X = l2_normalize(clustered())
    rq = residual_kmeans(X, [40, 16, 16], TorchKMeans(seed=0), n_iter=15)
    assert rq.codes.shape == (len(X), 3) and rq.codes.max() < 40
    errors = [np.mean(np.sum((X - reconstruct(rq.codes[:, :lv], rq.codebooks[:lv])) ** 2, 1)) for lv in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] == pytest.approx(rq.inertia[2] / len(X), rel=1e-3)
    cos = np.sum(X * l2_normalize(reconstruct(rq.codes, rq.codebooks)), 1)
    assert cos.mean() > 0.97  # 40 well-separated clusters, tight noise


def test_k_capped_to_distinct_points(caplog):
    X = np.repeat(np.eye(5, dtype=np.float32), 2, axis=0)  # 10 rows, 5 distinct
    with caplog.at_level(logging.WARNING):
        rq = residual_kmeans(X, [8, 8], TorchKMeans(seed=0), n_iter=5)
    assert rq.codebook_sizes == [5, 1]  # level 0 reproduces every point, so the residuals are all zero
    assert np.allclose(reconstruct(rq.codes, rq.codebooks), X)
    assert "distinct" in caplog.text


def test_same_seed_same_codes():
    X = clustered(n=1500)
    a = residual_kmeans(X, [16, 16], make_kmeans("torch", seed=5), n_iter=10).codes
    b = residual_kmeans(X, [16, 16], make_kmeans("torch", seed=5), n_iter=10).codes
    assert np.array_equal(a, b)


def test_code_usage_and_sizes():
    usage = code_usage(np.array([[0, 1], [0, 1], [1, 1], [2, 1]]), [4, 2])
    assert usage[0]["used"] == 3 and usage[0]["usage"] == 0.75
    assert usage[0]["perplexity"] == pytest.approx(2 ** 1.5)
    assert usage[1]["perplexity"] == pytest.approx(1.0)
    assert codebook_sizes(2, 32, 100) == [32, 32]
    assert codebook_sizes(2, 0, 3000) == [40, 40] and codebook_sizes(2, 0, 39674) == [144, 144]  # auto
    assert codebook_sizes(3, 0, 10) == [8, 8, 8] and codebook_sizes(1, 0, 3000) == [1504]
    with pytest.raises(PipelineError):
        codebook_sizes(0, 32, 100)
    with pytest.raises(PipelineError, match="backend"):
        make_kmeans("sklearn")


def test_rqvae_uses_codes_and_restores_best_checkpoint():
    X = l2_normalize(clustered(n=1200, d=32, centers=30, noise=0.3))
    cfg = Config().rqvae
    cfg.epochs, cfg.hidden_dims, cfg.latent_dim, cfg.device, cfg.dead_code_steps = 6, "64", 16, "cpu", 10
    res = train_rqvae(X, cfg, [16, 16], seed=1)
    assert all(u["usage"] >= 0.75 and u["perplexity"] > 8 for u in res.usage)  # most of the 16 codes in use
    vals = [h["val_recon"] for h in res.history]
    assert len(vals) == 6 and res.best_val_recon == min(vals) and vals[res.best_epoch - 1] == min(vals)
    assert vals[-1] < vals[0]
    _, val_idx = split_indices(len(X), cfg.val_fraction, 1)
    assert recon_loss(res.model, torch.as_tensor(X[val_idx])) == pytest.approx(res.best_val_recon, rel=1e-5)
    assert res.codes.shape == (len(X), 2)


def test_split_is_seeded_and_disjoint():
    tr, va = split_indices(100, 0.1, 7)
    assert len(va) == 10 and not set(tr) & set(va) and len(tr) + len(va) == 100
    assert np.array_equal(va, split_indices(100, 0.1, 7)[1])


def write_tiny_data(root, n=300, d=8, seed=0):
    """song_vectors.csv + gen_song_info.csv in the default column names (one song without a name)."""
    X = clustered(n=n, d=d, centers=12, noise=0.2, seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"{i:04d}" for i in range(n)]  # leading zeros must survive
    lines = ["mixsongid," + ",".join(f"v{j}" for j in range(d))]
    lines += [f"{sid}," + ",".join(f"{v:.6f}" for v in row) for sid, row in zip(ids, X)]
    (root / "song_vectors.csv").write_text("\n".join(lines) + "\n")
    info = ["mixsongid,songname,singername"] + [f"{sid},歌 {sid},artist {int(sid) % 7}" for sid in ids[1:]]
    (root / "gen_song_info.csv").write_text("\n".join(info) + "\n", encoding="utf-8")
    manifest.adopt(Config(data_dir=str(root)))  # as prepare_data.py --source=csv would have recorded them
    return ids


def args(tmp_path):
    return [f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}", f"--model_dir={tmp_path / 'models'}"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_train_rq_kmeans_smoke(tmp_path):
    import train_rq_kmeans

    ids = write_tiny_data(tmp_path / "data")
    train_rq_kmeans.main(args(tmp_path) + ["--rqkmeans.vocab_size=8", "--rqkmeans.levels=3"])
    out = tmp_path / "out"
    rows = read_jsonl(out / "song_semantic_ids.jsonl")
    assert sorted(r["song_id"] for r in rows) == sorted(ids)  # every song exactly once, IDs kept as strings
    assert all(len(r["semantic_ids"]) == 3 and max(r["semantic_ids"]) < 8 for r in rows)
    meta = json.loads((out / "semantic_ids_meta.json").read_text())
    assert meta["method"] == "rqkmeans" and meta["codebook_sizes"] == [8, 8, 8] and meta["dim"] == 8
    assert meta["normalize"] is True and meta["n_songs"] == len(ids) and len(meta["usage"]) == 3
    assert (out / "semantic_ids" / "rqkmeans" / "codebooks.npz").exists()
    assert read_jsonl(out / "semantic_ids" / "rqkmeans" / "song_semantic_ids.jsonl") == rows
    assert (out / "configs" / "train_rq_kmeans.json").exists()
    first = (out / "song_semantic_ids.jsonl").read_bytes()
    train_rq_kmeans.main(args(tmp_path) + ["--rqkmeans.vocab_size=8", "--rqkmeans.levels=3"])
    assert (out / "song_semantic_ids.jsonl").read_bytes() == first  # same seed, same IDs


def test_song_level_gives_every_song_its_own_id_ranked_by_distance(tmp_path):
    import train_rq_kmeans
    from playlist_gen.data import load_song_vectors
    from playlist_gen.kmeans import l2_normalize, load_codebooks, reconstruct

    write_tiny_data(tmp_path / "data")
    train_rq_kmeans.main(args(tmp_path) + ["--rqkmeans.vocab_size=8", "--rqkmeans.song_level=true"])
    out = tmp_path / "out"
    rows = read_jsonl(out / "song_semantic_ids.jsonl")
    codes = np.array([r["semantic_ids"] for r in rows])
    meta = json.loads((out / "semantic_ids_meta.json").read_text())
    assert meta["levels"] == 3 and meta["song_level"] and meta["codebook_sizes"][:2] == [8, 8]
    assert len({tuple(c) for c in codes}) == len(codes)  # one ID per song
    assert meta["codebook_sizes"][2] == codes[:, 2].max() + 1 > 1
    _, X = load_song_vectors(tmp_path / "data" / "song_vectors.csv")
    books, _ = load_codebooks(out / "semantic_ids" / "rqkmeans" / "codebooks.npz", "")
    dist = np.square(l2_normalize(X) - reconstruct(codes[:, :2], books)).sum(1)
    for t in {tuple(c) for c in codes[:, :2]}:  # inside a tuple: ranks 0..n-1, nearest its reconstruction first
        members = np.flatnonzero((codes[:, :2] == t).all(1))
        assert sorted(codes[members, 2]) == list(range(len(members)))
        assert (np.diff(dist[members[np.argsort(codes[members, 2])]]) >= 0).all()
    with pytest.raises(PipelineError, match="song-level"):
        train_rq_kmeans.main(args(tmp_path) + ["--rqkmeans.assign_only=true"])


def test_missing_vectors_says_run_prepare_data(tmp_path):
    import train_rq_kmeans
    import train_rqvae

    for script in (train_rq_kmeans, train_rqvae):
        with pytest.raises(PipelineError, match="prepare_data.py"):
            script.main(args(tmp_path))


def write_vectors(root, X):
    root.mkdir(parents=True, exist_ok=True)
    lines = ["mixsongid," + ",".join(f"v{j}" for j in range(X.shape[1]))]
    lines += [f"{i:04d}," + ",".join(f"{v:.6g}" for v in row) for i, row in enumerate(X)]
    (root / "song_vectors.csv").write_text("\n".join(lines) + "\n")
    manifest.adopt(Config(data_dir=str(root)))


def test_vectors_near_float32_max_are_normalised_without_overflow(tmp_path):
    import train_rq_kmeans

    X = clustered(n=300, d=8, centers=12, noise=0.2, seed=0)
    write_vectors(tmp_path / "data", X * 1e30)  # inside float32; their squares are not
    train_rq_kmeans.main(args(tmp_path) + ["--rqkmeans.vocab_size=8"])
    rows = read_jsonl(tmp_path / "out" / "song_semantic_ids.jsonl")
    assert len({tuple(r["semantic_ids"]) for r in rows}) > 20  # not all (0, 0)


@pytest.mark.parametrize("case", ["one_dimension", "constant"])
def test_collapsed_ids_stop_stage_1(tmp_path, case):
    import train_rq_kmeans
    import train_rqvae

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 1)) if case == "one_dimension" else np.ones((300, 4)) + 1e-7 * rng.normal(size=(300, 4))
    write_vectors(tmp_path / "data", X)
    for script in (train_rq_kmeans, train_rqvae):
        with pytest.raises(PipelineError, match="the semantic IDs collapsed: 300 songs got"):
            script.main(args(tmp_path) + ["--rqkmeans.vocab_size=16", "--rqvae.vocab_size=16", "--rqvae.epochs=2"])


def test_all_zero_vectors_are_named(tmp_path):
    import train_rq_kmeans

    X = clustered(n=50, d=4, centers=3, noise=0.2, seed=0)
    X[7] = 0
    write_vectors(tmp_path / "data", X)
    with pytest.raises(PipelineError, match=r"song_vectors.csv, line 9: song '0007' has an all-zero vector \(1 songs"):
        train_rq_kmeans.main(args(tmp_path))
