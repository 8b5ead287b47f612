"""Stage 1 (RQ-VAE): give every song a semantic ID from a residual-quantised autoencoder.

Reads the song vectors of prepare_data.py (song_vectors.csv, or song_vectors_built.csv), optionally
L2-normalises them, trains an MLP encoder/decoder whose latent is quantised level by level (codebooks
initialised by k-means, dead codes re-seeded) on a seeded train/validation split, keeps the epoch with the best
validation reconstruction, and writes the songs' codes as outputs/song_semantic_ids.jsonl plus metadata, the
checkpoint and the codebooks under outputs/semantic_ids/rqvae/.

--rqvae.assign_only=true: songs added to the song vectors since training (run `prepare_data.py --source=csv`
after adding them) get IDs from the saved encoder and codebooks (each joins the existing cluster nearest to its
latent) without retraining; songs with IDs keep them, so the corpus and model stay valid.
"""

import time

from playlist_gen.cli import parse_config, run_script, save_config

METHOD = "rqvae"
SECTIONS = ("rqvae",)  # the config sections --help lists first


def assign_only(cfg) -> int:
    """New songs of the song vectors -> the nearest existing cluster in the saved encoder's latent space; the
    manifest records the new IDs as an extension of the old ones."""
    import torch

    from playlist_gen import manifest
    from playlist_gen.kmeans import l2_normalize
    from playlist_gen.rqvae import load_checkpoint
    from playlist_gen.semantic_ids import assign_new_songs, output_files

    files = [cfg.rqvae_checkpoint_path, cfg.codebooks_path(METHOD), *output_files(cfg, METHOD)]
    compatible = manifest.extending(cfg, "semantic_ids", files)
    reads = manifest.Reads(cfg)
    vectors = manifest.require_vectors(reads)
    model, extra = load_checkpoint(files[0], "run `python train_rqvae.py` first")
    normalize = bool(extra.get("normalize", True))

    def encode(X):
        with torch.no_grad():
            z = model.encoder(torch.from_numpy(l2_normalize(X) if normalize else X)).numpy()
        return z, [b.detach().numpy() for b in model.codebooks]

    command = "python train_rqvae.py --rqvae.assign_only=true"
    manifest.begin(cfg, "semantic_ids", files, command)
    n = assign_new_songs(cfg, METHOD, encode, vectors)
    manifest.finish(cfg, "semantic_ids", files, reads, command, compatible=compatible)
    return n


def main(argv=None):
    cfg = parse_config(argv, __doc__, SECTIONS)
    from playlist_gen import manifest
    from playlist_gen.data import load_song_vectors
    from playlist_gen.kmeans import codebook_sizes, l2_normalize, save_codebooks
    from playlist_gen.rqvae import save_checkpoint, train_rqvae
    from playlist_gen.semantic_ids import check_not_collapsed, output_files, save_outputs

    rq_cfg = cfg.rqvae
    if rq_cfg.assign_only:
        assign_only(cfg)
        return
    t0 = time.perf_counter()
    reads = manifest.Reads(cfg)
    vectors_path = manifest.require_vectors(reads)
    song_ids, X = load_song_vectors(vectors_path)
    sizes = codebook_sizes(rq_cfg.levels, rq_cfg.vocab_size, len(song_ids))
    result = train_rqvae(l2_normalize(X) if rq_cfg.normalize else X, rq_cfg, sizes, seed=cfg.seed)
    check_not_collapsed(result.codes, sizes, vectors_path, X.shape[1])
    meta = {"method": METHOD, "levels": rq_cfg.levels, "codebook_sizes": sizes, "dim": X.shape[1],
            "latent_dim": rq_cfg.latent_dim, "normalize": rq_cfg.normalize, "n_songs": len(song_ids),
            "vocab_size_requested": rq_cfg.vocab_size, "device": result.device, "seed": cfg.seed,
            "n_train": result.n_train, "n_val": result.n_val, "best_epoch": result.best_epoch,
            "best_val_recon": result.best_val_recon, "codes_reseeded": result.reseeded, "usage": result.usage,
            "history": result.history, "seconds": {"train": result.seconds, "total": time.perf_counter() - t0},
            "checkpoint_file": cfg.rqvae_checkpoint_path.name, "codebooks_file": cfg.codebooks_path(METHOD).name}
    files = [cfg.rqvae_checkpoint_path, cfg.codebooks_path(METHOD), *output_files(cfg, METHOD)]
    manifest.begin(cfg, "semantic_ids", files, "python train_rqvae.py")
    save_checkpoint(files[0], result.model, normalize=rq_cfg.normalize, best_epoch=result.best_epoch,
                    best_val_recon=result.best_val_recon)
    save_codebooks(files[1], [b.detach().cpu().numpy() for b in result.model.codebooks], normalize=rq_cfg.normalize)
    save_outputs(cfg, METHOD, song_ids, result.codes, meta)
    save_config(cfg, "train_rqvae")
    manifest.finish(cfg, "semantic_ids", files, reads, "python train_rqvae.py")


if __name__ == "__main__":
    run_script(main)
