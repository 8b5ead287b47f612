"""Stage 1 (RQ-KMeans): give every song a semantic ID by residual k-means on its vector.

Reads song_vectors.csv (made by prepare_data.py), optionally L2-normalises the vectors, fits one
k-means codebook per level on the residuals of the previous levels and writes
outputs/song_semantic_ids.jsonl ({"song_id": ..., "semantic_ids": [...]}, every song once), its
metadata, and the codebooks (for debug_collisions.py) under outputs/semantic_ids/rqkmeans/.

--rqkmeans.assign_only=true: songs added to song_vectors.csv since training get IDs from the saved codebooks
(each joins its nearest existing cluster) without refitting them or touching the model; songs with IDs keep them.
The song index picks them up, so the next generated playlist can contain them.
"""

import time

from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.data import load_song_vectors
from playlist_gen.kmeans import (
    CODEBOOKS_FILE,
    code_usage,
    codebook_sizes,
    l2_normalize,
    load_codebooks,
    make_kmeans,
    residual_kmeans,
    save_codebooks,
)
from playlist_gen.semantic_ids import assign_new_songs, save_outputs

METHOD = "rqkmeans"


def assign_only(cfg) -> int:
    """New songs of song_vectors.csv -> the nearest existing cluster under the saved codebooks (no refit)."""
    codebooks, extra = load_codebooks(cfg.method_dir(METHOD) / CODEBOOKS_FILE, "run `python train_rq_kmeans.py` first")
    normalize = bool(extra.get("normalize", True))
    return assign_new_songs(cfg, METHOD, lambda X: (l2_normalize(X) if normalize else X, codebooks))


def main(argv=None):
    cfg = parse_config(argv, __doc__)
    rq_cfg = cfg.rqkmeans
    if rq_cfg.assign_only:
        assign_only(cfg)
        return
    t0 = time.perf_counter()
    song_ids, X = load_song_vectors(cfg.song_vectors_path)
    sizes = codebook_sizes(rq_cfg.levels, rq_cfg.vocab_size, len(song_ids))
    kmeans = make_kmeans(rq_cfg.backend, seed=cfg.seed, device=rq_cfg.device)
    rq = residual_kmeans(l2_normalize(X) if rq_cfg.normalize else X, sizes, kmeans, rq_cfg.n_iter)
    save_codebooks(cfg.method_dir(METHOD) / CODEBOOKS_FILE, rq.codebooks, normalize=rq_cfg.normalize)
    meta = {"method": METHOD, "levels": rq_cfg.levels, "codebook_sizes": rq.codebook_sizes, "dim": X.shape[1],
            "normalize": rq_cfg.normalize, "n_songs": len(song_ids), "vocab_size_requested": rq_cfg.vocab_size,
            "backend": kmeans.name, "device": str(getattr(kmeans, "device", "faiss")), "n_iter": rq_cfg.n_iter,
            "seed": cfg.seed, "residual_energy": rq.inertia, "usage": code_usage(rq.codes, rq.codebook_sizes),
            "seconds": {"kmeans_per_level": rq.seconds, "total": time.perf_counter() - t0},
            "codebooks_file": CODEBOOKS_FILE}
    save_outputs(cfg, METHOD, song_ids, rq.codes, meta)
    save_config(cfg, "train_rq_kmeans")


if __name__ == "__main__":
    run_script(main)
