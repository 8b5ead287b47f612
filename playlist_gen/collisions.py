"""Cluster report for semantic IDs: how songs share tuples, and how well the quantiser fits.

For each method with IDs on disk (the current IDs, plus every method folder under
outputs/semantic_ids/), `method_report` gives the tuple statistics, the largest clusters with song
names, per-level codebook usage and entropy, and the average cosine similarity between each song
vector and its reconstruction from its codes (the number the original asks users to compare).
"""

import logging
from pathlib import Path

import numpy as np

from .data import load_song_vectors, read_csv_strings
from .io import png_plot, write_json
from .kmeans import code_usage, l2_normalize, load_codebooks, reconstruct
from .semantic_ids import MADE_BY, clusters, load_semantic_ids, read_meta

log = logging.getLogger(__name__)

METHODS = ("rqkmeans", "rqvae")
TOP_CLUSTERS = 5
SONGS_SHOWN = 10  # songs listed per large cluster


def available_methods(cfg) -> list[str]:
    """Methods to report: the current one first, then every other method folder with IDs."""
    current = read_meta(cfg.semantic_meta_path)["method"]
    others = [m for m in METHODS if m != current and cfg.method_meta_path(m).exists()]
    return [current, *others]


def load_method_ids(cfg, method: str) -> tuple[dict, dict]:
    """A method's own copy of the IDs when it has one, else the current IDs."""
    return load_semantic_ids(cfg, method if cfg.method_meta_path(method).exists() else None)


def song_names(cfg) -> dict[str, tuple[str, str]]:
    """song_id -> (name, artist); empty (with a warning) when the song info file is absent."""
    d = cfg.data
    if not cfg.song_info_path.exists():
        log.warning("%s not found: clusters are listed by song id only", cfg.song_info_path)
        return {}
    df = read_csv_strings(cfg.song_info_path, {d.song_id_col: "song_id_col", d.song_name_col: "song_name_col",
                                               d.artist_col: "artist_col"})
    return dict(zip(df[d.song_id_col], zip(df[d.song_name_col], df[d.artist_col])))


def cluster_stats(song_to_ids: dict) -> dict:
    sizes = np.array([len(v) for v in clusters(song_to_ids).values()])
    n = int(sizes.sum())
    return {"n_songs": n, "n_tuples": len(sizes), "mean_size": float(sizes.mean()),
            "median_size": float(np.median(sizes)), "p90_size": float(np.percentile(sizes, 90)),
            "max_size": int(sizes.max()), "singletons": int((sizes == 1).sum()),
            "share_sharing": float(sizes[sizes > 1].sum() / n), "largest_share": float(sizes.max() / n),
            "size_histogram": {int(k): int(c) for k, c in zip(*np.unique(sizes, return_counts=True))}}


def largest_clusters(song_to_ids: dict, names: dict, top: int = TOP_CLUSTERS) -> list[dict]:
    groups = sorted(clusters(song_to_ids).items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    out = []
    for tup, songs in groups:
        shown = [{"song_id": s, "name": names.get(s, ("unknown", "unknown"))[0],
                  "artist": names.get(s, ("unknown", "unknown"))[1]} for s in songs[:SONGS_SHOWN]]
        out.append({"semantic_ids": list(tup), "size": len(songs), "songs": shown})
    return out


def reconstructions(cfg, method: str, meta: dict, codes: np.ndarray) -> np.ndarray | None:
    """Each song's vector as its codes reproduce it (None when the method's files are missing)."""
    if method == "rqvae":
        import torch

        from .rqvae import load_checkpoint

        if not cfg.rqvae_checkpoint_path.exists():
            log.warning("%s not found: no reconstruction quality for rqvae", cfg.rqvae_checkpoint_path)
            return None
        model, _ = load_checkpoint(cfg.rqvae_checkpoint_path, MADE_BY)
        with torch.no_grad():
            return model.decode_codes(torch.as_tensor(codes)).numpy()
    if not cfg.codebooks_path(method).exists():
        log.warning("%s not found: no reconstruction quality for %s", cfg.codebooks_path(method), method)
        return None
    books, _ = load_codebooks(cfg.codebooks_path(method), MADE_BY)
    return reconstruct(codes, books)


def cosine_quality(cfg, method: str, meta: dict, song_to_ids: dict, vectors: tuple) -> dict:
    """Average cosine similarity of song vectors (normalised if the method normalised) to their reconstructions."""
    ids, X = vectors
    keep = [i for i, s in enumerate(ids) if s in song_to_ids]
    if len(keep) < len(ids):
        log.warning("%s: %s songs with vectors have no %s ID", method, f"{len(ids) - len(keep):,}", method)
    X = X[keep]
    if meta.get("normalize", False):
        X = l2_normalize(X)
    codes = np.array([song_to_ids[ids[i]] for i in keep], dtype=np.int64).reshape(len(keep), -1)
    recon = reconstructions(cfg, method, meta, codes)
    if recon is None or recon.shape != X.shape:
        return {"avg_cosine": None, "songs_compared": 0}
    cos = np.sum(l2_normalize(X) * l2_normalize(recon), axis=1)
    return {"avg_cosine": float(cos.mean()), "median_cosine": float(np.median(cos)),
            "mse": float(np.mean((X - recon) ** 2)), "songs_compared": len(keep)}


def method_report(cfg, method: str, current: bool, names: dict, vectors: tuple) -> dict:
    song_to_ids, meta = load_method_ids(cfg, method)
    codes = np.array(list(song_to_ids.values()), dtype=np.int64).reshape(len(song_to_ids), -1)
    return {"method": method, "current": current, "levels": meta["levels"],
            "codebook_sizes": meta["codebook_sizes"], **cluster_stats(song_to_ids),
            **cosine_quality(cfg, method, meta, song_to_ids, vectors),
            "usage": code_usage(codes, meta["codebook_sizes"]),
            "largest_clusters": largest_clusters(song_to_ids, names)}


def build_reports(cfg, vectors_path) -> dict[str, dict]:
    """method -> report, the current IDs' method first."""
    methods = available_methods(cfg)
    names = song_names(cfg)
    vectors = load_song_vectors(vectors_path)
    return {m: method_report(cfg, m, i == 0, names, vectors) for i, m in enumerate(methods)}


TABLE_ROWS = [("songs", "n_songs", "{:,}"), ("distinct tuples", "n_tuples", "{:,}"),
              ("songs per tuple: mean", "mean_size", "{:.2f}"), ("songs per tuple: median", "median_size", "{:.1f}"),
              ("songs per tuple: p90", "p90_size", "{:.1f}"), ("songs per tuple: max", "max_size", "{:,}"),
              ("share of songs sharing a tuple", "share_sharing", "{:.1%}"),
              ("largest cluster share", "largest_share", "{:.2%}"),
              ("Average Cosine Similarity", "avg_cosine", "{:.4f}")]


def format_table(reports: dict[str, dict]) -> str:
    """One column per method, then each method's largest clusters."""
    methods = list(reports)
    head = [""] + [f"{m}{' (current)' if reports[m]['current'] else ''}" for m in methods]
    rows = [head, ["codebook sizes"] + ["x".join(map(str, reports[m]["codebook_sizes"])) for m in methods]]
    for label, key, fmt in TABLE_ROWS:
        rows.append([label] + ["n/a" if reports[m].get(key) is None else fmt.format(reports[m][key]) for m in methods])
    for level in range(max(len(r["usage"]) for r in reports.values())):
        for label, key, fmt in (("usage", "usage", "{:.1%}"), ("perplexity", "perplexity", "{:.1f}")):
            rows.append([f"level {level} {label}"] + [fmt.format(reports[m]["usage"][level][key])
                                                      if level < len(reports[m]["usage"]) else "" for m in methods])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    for m in methods:
        lines.append(f"\n{m}: largest clusters")
        for c in reports[m]["largest_clusters"]:
            songs = "; ".join(f"{s['name']} - {s['artist']}" for s in c["songs"][:5])
            lines.append(f"  {tuple(c['semantic_ids'])} x{c['size']:,}: {songs}")
    return "\n".join(lines)


def write_histogram(path: Path, reports: dict[str, dict]) -> None:
    """Tuples per cluster size, one step line per method (log axes once sizes get large)."""
    top = max(r["max_size"] for r in reports.values())
    bins = np.arange(1, top + 2) - 0.5 if top <= 60 else np.unique(np.geomspace(1, top + 1, 40).astype(int)) - 0.5
    with png_plot(path, (7, 4), 100, dict(left=0.11, right=0.97, bottom=0.13, top=0.92)) as ax:
        for m, r in reports.items():
            sizes, counts = zip(*r["size_histogram"].items())
            ax.hist(sizes, bins=bins, weights=counts, histtype="step", linewidth=1.5, label=m)
        ax.set(xlabel="songs per semantic-ID tuple", ylabel="tuples", yscale="log", title="Cluster sizes")
        if top > 60:
            ax.set_xscale("log")
        ax.legend()


def write_report(cfg, reports: dict[str, dict]) -> None:
    write_json(cfg.collisions_report_path, {"current_method": next(iter(reports)), "methods": reports})
    write_histogram(cfg.collisions_png_path, reports)
