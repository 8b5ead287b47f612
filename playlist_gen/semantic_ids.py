"""Reading and writing stage 1's output: song -> semantic-ID tuple, plus its metadata.

Files (paths in config.py): `song_semantic_ids.jsonl`, one `{"song_id": ..., "semantic_ids": [...]}`
per line, and `semantic_ids_meta.json` with at least `method`, `levels`, `codebook_sizes`, `dim`.
Later stages read the metadata instead of their own defaults.
"""

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from config import COMMANDS

from .io import PipelineError, atomic_write, read_json, require_file, write_json

MADE_BY = f"run `{COMMANDS['semantic_ids']}` (or `python train_rqvae.py`) first"
log = logging.getLogger(__name__)


def write_semantic_ids(path, song_ids, codes) -> None:
    """codes: an (n_songs, levels) integer array aligned with song_ids."""
    with atomic_write(path) as f:
        for sid, row in zip(song_ids, codes):
            f.write(json.dumps({"song_id": sid, "semantic_ids": [int(c) for c in row]}, ensure_ascii=False) + "\n")


def read_meta(path) -> dict:
    meta = read_json(path, MADE_BY)
    for key in ("method", "levels", "codebook_sizes", "dim"):
        if key not in meta:
            raise PipelineError(f"{path}: missing key {key!r}; {MADE_BY}")
    return meta


def read_semantic_ids(path, levels: int | None = None) -> dict[str, tuple[int, ...]]:
    path = require_file(path, MADE_BY)
    out = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                sid, codes = str(rec["song_id"]), tuple(int(c) for c in rec["semantic_ids"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise PipelineError(f"{path}, line {lineno}: expected {{\"song_id\": ..., \"semantic_ids\": [...]}}; "
                                    f"{MADE_BY}") from None
            if levels is not None and len(codes) != levels:
                raise PipelineError(f"{path}, line {lineno}: {len(codes)} codes where the metadata says {levels}")
            if sid in out:
                raise PipelineError(f"{path}, line {lineno}: duplicate song id {sid!r}")
            out[sid] = codes
    return out


def load_semantic_ids(cfg, method: str | None = None) -> tuple[dict[str, tuple[int, ...]], dict]:
    """The current IDs (or one method's copy) and their metadata."""
    meta_path = cfg.method_meta_path(method) if method else cfg.semantic_meta_path
    ids_path = cfg.method_ids_path(method) if method else cfg.semantic_ids_path
    meta = read_meta(meta_path)
    return read_semantic_ids(ids_path, meta["levels"]), meta


def nearest_existing(points: np.ndarray, codebooks, existing: list[tuple]) -> list[tuple]:
    """Each point's nearest existing tuple (the sum of its codebook vectors, in the quantiser's space): a new song
    joins a cluster the trained model already knows, instead of opening one it never saw."""
    recon = np.zeros((len(existing), codebooks[0].shape[1]), np.float32)
    for level, book in enumerate(codebooks):
        recon += np.asarray(book)[[t[level] for t in existing]]
    nearest = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), 4096):  # argmin |x - r|^2 = argmax 2 x.r - |r|^2
        scores = 2 * points[start:start + 4096] @ recon.T - (recon ** 2).sum(1)
        nearest[start:start + 4096] = scores.argmax(1)
    return [existing[i] for i in nearest]


def assign_new_songs(cfg, method: str, encode, vectors_path=None) -> int:
    """Give semantic IDs to the songs of the song vectors (`vectors_path`, default song_vectors.csv) that have
    none, with the saved quantiser of `method` (no refitting): `encode(vectors) -> (points, codebooks)` maps new
    vectors into the codebooks' space. Songs that have IDs keep them. Writes the IDs (method copy and current) and
    returns how many songs were added."""
    from .data import load_song_vectors

    vectors_path = vectors_path or cfg.song_vectors_path
    song_to_ids, meta = load_semantic_ids(cfg, method)
    song_ids, X = load_song_vectors(vectors_path)
    if X.shape[1] != int(meta["dim"]):
        raise PipelineError(f"{vectors_path} has {X.shape[1]} dimensions, the saved {method} quantiser "
                            f"{meta['dim']}: assign_only needs vectors like those it was trained on; retrain instead")
    new = [i for i, s in enumerate(song_ids) if s not in song_to_ids]
    if new:
        points, codebooks = encode(X[new])
        existing = sorted(set(song_to_ids.values()))
        for i, t in zip(new, nearest_existing(points, codebooks, existing)):
            song_to_ids[song_ids[i]] = t
    meta = {**meta, "n_songs": len(song_to_ids), "assigned_without_refit": meta.get("assigned_without_refit", 0)
            + len(new)}
    ids = list(song_to_ids)
    save_outputs(cfg, method, ids, np.array([song_to_ids[s] for s in ids], dtype=np.int64).reshape(len(ids), -1),
                 meta)
    log.info("%s: %s new songs joined existing clusters; %s songs keep their IDs", method, f"{len(new):,}",
             f"{len(song_to_ids) - len(new):,}")
    return len(new)


def add_song_level(codes: np.ndarray, points: np.ndarray, codebooks) -> np.ndarray:
    """TIGER's last token: each song's rank inside its tuple (0 = nearest the tuple's reconstruction) as one more
    level, so every song has an ID of its own and the model ranks songs itself, not clusters times training
    counts. (n, levels) -> (n, levels + 1)."""
    from .kmeans import reconstruct

    dist = np.square(points - reconstruct(codes, codebooks), dtype=np.float64).sum(1)
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.ravel()
    order = np.lexsort((np.arange(len(codes)), dist, group))  # by tuple, then distance (ties: file order)
    rank = np.empty(len(codes), np.int64)
    rank[order] = np.arange(len(codes)) - (np.cumsum(counts) - counts)[group[order]]
    return np.column_stack([codes, rank])


def clusters(song_to_ids: dict) -> dict[tuple[int, ...], list[str]]:
    """Concept clusters: tuple -> the songs that share it."""
    out = defaultdict(list)
    for sid, t in song_to_ids.items():
        out[t].append(sid)
    return dict(out)


def output_files(cfg, method: str) -> list[Path]:
    """What save_outputs writes: the method's copy of the IDs and metadata, and the current ones."""
    return [cfg.method_ids_path(method), cfg.method_meta_path(method), cfg.semantic_ids_path, cfg.semantic_meta_path]


def save_outputs(cfg, method: str, song_ids, codes, meta: dict) -> Path:
    """Write a method's IDs and metadata to its own folder and make them the current IDs.

    Codebooks and other method files go into the returned folder, written by the caller.
    """
    base = cfg.method_dir(method)
    write_semantic_ids(cfg.method_ids_path(method), song_ids, codes)
    write_json(cfg.method_meta_path(method), meta)
    write_semantic_ids(cfg.semantic_ids_path, song_ids, codes)
    write_json(cfg.semantic_meta_path, meta)
    return base


def check_not_collapsed(codes: np.ndarray, sizes, vectors_path, dim: int) -> None:
    """Refuse IDs that say nothing: when the songs fall into a handful of tuples, or one tuple holds most of them
    (vectors of one dimension normalise to +-1; huge or constant vectors leave one direction), every later stage
    would run on a degenerate catalogue."""
    n = len(codes)
    _, counts = np.unique(codes, axis=0, return_counts=True) if n else (None, np.array([0]))
    floor = max(2, 0.02 * min(n, int(np.prod(sizes))))
    if n >= 20 and (len(counts) < floor or counts.max() > 0.5 * n):
        raise PipelineError(f"the semantic IDs collapsed: {n:,} songs got {len(counts):,} distinct IDs, the largest "
                            f"holding {counts.max() / n:.0%} of them; check {vectors_path} (its {dim} dimension(s), "
                            "scale, near-identical rows), or --rqkmeans.normalize=false for vectors whose length "
                            "matters")
