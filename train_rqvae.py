"""Stage 1 (RQ-VAE): give every song a semantic ID from a residual-quantised autoencoder.

Reads the song vectors of prepare_data.py (song_vectors.csv, or song_vectors_built.csv), optionally
L2-normalises them, trains an MLP encoder/decoder whose latent is quantised level by level (codebooks
initialised by k-means, dead codes re-seeded) on a seeded train/validation split, keeps the epoch with the best
validation reconstruction, and writes the songs' codes as outputs/song_semantic_ids.jsonl plus metadata, the
checkpoint and the codebooks under outputs/semantic_ids/rqvae/.
"""

import time

from playlist_gen.cli import parse_config, run_script, save_config

METHOD = "rqvae"
SECTIONS = ("rqvae",)  # the config sections --help lists first


def main(argv=None):
    cfg = parse_config(argv, __doc__, SECTIONS)
    from playlist_gen import manifest
    from playlist_gen.data import load_song_vectors
    from playlist_gen.kmeans import CODEBOOKS_FILE, codebook_sizes, l2_normalize, save_codebooks
    from playlist_gen.rqvae import CHECKPOINT_FILE, save_checkpoint, train_rqvae
    from playlist_gen.semantic_ids import output_files, save_outputs

    rq_cfg = cfg.rqvae
    t0 = time.perf_counter()
    reads = manifest.Reads(cfg)
    song_ids, X = load_song_vectors(manifest.require_vectors(reads))
    sizes = codebook_sizes(rq_cfg.levels, rq_cfg.vocab_size, len(song_ids))
    result = train_rqvae(l2_normalize(X) if rq_cfg.normalize else X, rq_cfg, sizes, seed=cfg.seed)
    meta = {"method": METHOD, "levels": rq_cfg.levels, "codebook_sizes": sizes, "dim": X.shape[1],
            "latent_dim": rq_cfg.latent_dim, "normalize": rq_cfg.normalize, "n_songs": len(song_ids),
            "vocab_size_requested": rq_cfg.vocab_size, "device": result.device, "seed": cfg.seed,
            "n_train": result.n_train, "n_val": result.n_val, "best_epoch": result.best_epoch,
            "best_val_recon": result.best_val_recon, "codes_reseeded": result.reseeded, "usage": result.usage,
            "history": result.history, "seconds": {"train": result.seconds, "total": time.perf_counter() - t0},
            "checkpoint_file": CHECKPOINT_FILE, "codebooks_file": CODEBOOKS_FILE}
    base = cfg.method_dir(METHOD)
    files = [base / CHECKPOINT_FILE, base / CODEBOOKS_FILE, *output_files(cfg, METHOD)]
    manifest.begin(cfg, "semantic_ids", files, "python train_rqvae.py")
    save_checkpoint(files[0], result.model, normalize=rq_cfg.normalize, best_epoch=result.best_epoch,
                    best_val_recon=result.best_val_recon)
    save_codebooks(files[1], [b.detach().cpu().numpy() for b in result.model.codebooks], normalize=rq_cfg.normalize)
    save_outputs(cfg, METHOD, song_ids, result.codes, meta)
    save_config(cfg, "train_rqvae")
    manifest.finish(cfg, "semantic_ids", files, reads, "python train_rqvae.py")


if __name__ == "__main__":
    run_script(main)
