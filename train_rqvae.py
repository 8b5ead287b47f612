"""Stage 1 (RQ-VAE): give every song a semantic ID from a residual-quantised autoencoder.

Reads song_vectors.csv (made by prepare_data.py), optionally L2-normalises the vectors, trains an
MLP encoder/decoder whose latent is quantised level by level (codebooks initialised by k-means,
dead codes re-seeded) on a seeded train/validation split, keeps the epoch with the best validation
reconstruction, and writes the songs' codes as outputs/song_semantic_ids.jsonl plus metadata, the
checkpoint and the codebooks under outputs/semantic_ids/rqvae/.

--rqvae.assign_only=true: songs added to song_vectors.csv since training get IDs from the saved encoder and
codebooks (each joins the existing cluster nearest to its latent) without retraining; songs with IDs keep them.
"""

import time

from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.data import load_song_vectors
from playlist_gen.kmeans import CODEBOOKS_FILE, codebook_sizes, l2_normalize, save_codebooks
from playlist_gen.rqvae import CHECKPOINT_FILE, load_checkpoint, save_checkpoint, train_rqvae
from playlist_gen.semantic_ids import assign_new_songs, save_outputs

METHOD = "rqvae"


def assign_only(cfg) -> int:
    """New songs of song_vectors.csv -> the nearest existing cluster in the saved encoder's latent space."""
    import torch

    model, extra = load_checkpoint(cfg.method_dir(METHOD) / CHECKPOINT_FILE, "run `python train_rqvae.py` first")
    normalize = bool(extra.get("normalize", True))

    def encode(X):
        with torch.no_grad():
            z = model.encoder(torch.from_numpy(l2_normalize(X) if normalize else X)).numpy()
        return z, [b.detach().numpy() for b in model.codebooks]

    return assign_new_songs(cfg, METHOD, encode)


def main(argv=None):
    cfg = parse_config(argv, __doc__)
    rq_cfg = cfg.rqvae
    if rq_cfg.assign_only:
        assign_only(cfg)
        return
    t0 = time.perf_counter()
    song_ids, X = load_song_vectors(cfg.song_vectors_path)
    sizes = codebook_sizes(rq_cfg.levels, rq_cfg.vocab_size, len(song_ids))
    result = train_rqvae(l2_normalize(X) if rq_cfg.normalize else X, rq_cfg, sizes, seed=cfg.seed)
    base = cfg.method_dir(METHOD)
    save_checkpoint(base / CHECKPOINT_FILE, result.model, normalize=rq_cfg.normalize, best_epoch=result.best_epoch,
                    best_val_recon=result.best_val_recon)
    save_codebooks(base / CODEBOOKS_FILE, [b.detach().cpu().numpy() for b in result.model.codebooks],
                   normalize=rq_cfg.normalize)
    meta = {"method": METHOD, "levels": rq_cfg.levels, "codebook_sizes": sizes, "dim": X.shape[1],
            "latent_dim": rq_cfg.latent_dim, "normalize": rq_cfg.normalize, "n_songs": len(song_ids),
            "vocab_size_requested": rq_cfg.vocab_size, "device": result.device, "seed": cfg.seed,
            "n_train": result.n_train, "n_val": result.n_val, "best_epoch": result.best_epoch,
            "best_val_recon": result.best_val_recon, "codes_reseeded": result.reseeded, "usage": result.usage,
            "history": result.history, "seconds": {"train": result.seconds, "total": time.perf_counter() - t0},
            "checkpoint_file": CHECKPOINT_FILE, "codebooks_file": CODEBOOKS_FILE}
    save_outputs(cfg, METHOD, song_ids, result.codes, meta)
    save_config(cfg, "train_rqvae")


if __name__ == "__main__":
    run_script(main)
