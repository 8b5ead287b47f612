"""Stage 1 (RQ-KMeans): give every song a semantic ID by residual k-means on its vector.

Reads the song vectors of prepare_data.py (song_vectors.csv, or song_vectors_built.csv), optionally
L2-normalises them, fits one k-means codebook per level on the residuals of the previous levels and writes
outputs/song_semantic_ids.jsonl ({"song_id": ..., "semantic_ids": [...]}, every song once), its
metadata, and the codebooks (for debug_collisions.py) under outputs/semantic_ids/rqkmeans/.

--rqkmeans.assign_only=true: songs added to the song vectors since training (run `prepare_data.py --source=csv`
after adding them) get IDs from the saved codebooks (each joins its nearest existing cluster) without refitting
them or touching the model; songs with IDs keep them, so the corpus and model stay valid. The song index picks
them up, so the next generated playlist can contain them.
"""

import time

from playlist_gen.cli import parse_config, run_script, save_config

METHOD = "rqkmeans"
SECTIONS = ("rqkmeans",)  # the config sections --help lists first


def assign_only(cfg) -> int:
    """New songs of the song vectors -> the nearest existing cluster under the saved codebooks (no refit); the
    manifest records the new IDs as an extension of the old ones."""
    from playlist_gen import manifest
    from playlist_gen.io import PipelineError
    from playlist_gen.kmeans import l2_normalize, load_codebooks
    from playlist_gen.semantic_ids import assign_new_songs, output_files, read_meta

    files = [cfg.codebooks_path(METHOD), *output_files(cfg, METHOD)]
    compatible = manifest.extending(cfg, "semantic_ids", files)
    reads = manifest.Reads(cfg)
    vectors = manifest.require_vectors(reads)
    codebooks, extra = load_codebooks(files[0], "run `python train_rq_kmeans.py` first")
    if len(codebooks) != int(read_meta(cfg.method_meta_path(METHOD))["levels"]):
        raise PipelineError("--rqkmeans.assign_only: the saved IDs have a song-level code (--rqkmeans.song_level), "
                            "which new songs cannot get without a refit; run `python train_rq_kmeans.py` again")
    normalize = bool(extra.get("normalize", True))
    command = "python train_rq_kmeans.py --rqkmeans.assign_only=true"
    manifest.begin(cfg, "semantic_ids", files, command)
    n = assign_new_songs(cfg, METHOD, lambda X: (l2_normalize(X) if normalize else X, codebooks), vectors)
    manifest.finish(cfg, "semantic_ids", files, reads, command, compatible=compatible)
    return n


def main(argv=None):
    cfg = parse_config(argv, __doc__, SECTIONS)
    from playlist_gen import manifest
    from playlist_gen.data import load_song_vectors
    from playlist_gen.kmeans import (
        code_usage,
        codebook_sizes,
        l2_normalize,
        make_kmeans,
        residual_kmeans,
        save_codebooks,
    )
    from playlist_gen.semantic_ids import add_song_level, check_not_collapsed, output_files, save_outputs

    rq_cfg = cfg.rqkmeans
    if rq_cfg.assign_only:
        assign_only(cfg)
        return
    t0 = time.perf_counter()
    reads = manifest.Reads(cfg)
    vectors_path = manifest.require_vectors(reads)
    song_ids, X = load_song_vectors(vectors_path)
    sizes = codebook_sizes(rq_cfg.levels, rq_cfg.vocab_size, len(song_ids))
    kmeans = make_kmeans(rq_cfg.backend, seed=cfg.seed, device=rq_cfg.device)
    points = l2_normalize(X) if rq_cfg.normalize else X
    rq = residual_kmeans(points, sizes, kmeans, rq_cfg.n_iter)
    check_not_collapsed(rq.codes, rq.codebook_sizes, vectors_path, X.shape[1])
    codes, sizes = rq.codes, rq.codebook_sizes
    if rq_cfg.song_level:
        codes = add_song_level(codes, points, rq.codebooks)
        sizes = [*sizes, int(codes[:, -1].max()) + 1]
    meta = {"method": METHOD, "levels": codes.shape[1], "codebook_sizes": sizes, "dim": X.shape[1],
            "song_level": rq_cfg.song_level,
            "normalize": rq_cfg.normalize, "n_songs": len(song_ids), "vocab_size_requested": rq_cfg.vocab_size,
            "backend": kmeans.name, "device": str(getattr(kmeans, "device", "faiss")), "n_iter": rq_cfg.n_iter,
            "seed": cfg.seed, "residual_energy": rq.inertia, "usage": code_usage(codes, sizes),
            "seconds": {"kmeans_per_level": rq.seconds, "total": time.perf_counter() - t0},
            "codebooks_file": cfg.codebooks_path(METHOD).name}
    files = [cfg.codebooks_path(METHOD), *output_files(cfg, METHOD)]
    manifest.begin(cfg, "semantic_ids", files, "python train_rq_kmeans.py")
    save_codebooks(files[0], rq.codebooks, normalize=rq_cfg.normalize)
    save_outputs(cfg, METHOD, song_ids, codes, meta)
    save_config(cfg, "train_rq_kmeans")
    manifest.finish(cfg, "semantic_ids", files, reads, "python train_rq_kmeans.py")


if __name__ == "__main__":
    run_script(main)
