"""Reading and writing stage 1's output: song -> semantic-ID tuple, plus its metadata.

Files (paths in config.py): `song_semantic_ids.jsonl`, one `{"song_id": ..., "semantic_ids": [...]}`
per line, and `semantic_ids_meta.json` with at least `method`, `levels`, `codebook_sizes`, `dim`.
Later stages read the metadata instead of their own defaults.
"""

import json
from collections import defaultdict
from pathlib import Path

from .io import PipelineError, atomic_write, read_json, require_file, write_json

MADE_BY = "run `python train_rq_kmeans.py` (or `python train_rqvae.py`) first"


def write_semantic_ids(path, song_ids, codes) -> None:
    """codes: an (n_songs, levels) integer array aligned with song_ids."""
    with atomic_write(path) as f:
        for sid, row in zip(song_ids, codes):
            f.write(json.dumps({"song_id": sid, "semantic_ids": [int(c) for c in row]}, ensure_ascii=False) + "\n")


def write_meta(path, method: str, levels: int, codebook_sizes, dim: int, **extra) -> None:
    write_json(path, {"method": method, "levels": int(levels), "codebook_sizes": [int(k) for k in codebook_sizes],
                      "dim": int(dim), **extra})


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
    base = cfg.method_dir(method) if method else None
    meta_path = base / "meta.json" if base else cfg.semantic_meta_path
    ids_path = base / "song_semantic_ids.jsonl" if base else cfg.semantic_ids_path
    meta = read_meta(meta_path)
    return read_semantic_ids(ids_path, meta["levels"]), meta


def clusters(song_to_ids: dict) -> dict[tuple[int, ...], list[str]]:
    """Concept clusters: tuple -> the songs that share it."""
    out = defaultdict(list)
    for sid, t in song_to_ids.items():
        out[t].append(sid)
    return dict(out)


def output_files(cfg, method: str) -> list[Path]:
    """What save_outputs writes: the method's copy of the IDs and metadata, and the current ones."""
    base = cfg.method_dir(method)
    return [base / "song_semantic_ids.jsonl", base / "meta.json", cfg.semantic_ids_path, cfg.semantic_meta_path]


def save_outputs(cfg, method: str, song_ids, codes, meta: dict) -> Path:
    """Write a method's IDs and metadata to its own folder and make them the current IDs.

    Codebooks and other method files go into the returned folder, written by the caller.
    """
    base = cfg.method_dir(method)
    write_semantic_ids(base / "song_semantic_ids.jsonl", song_ids, codes)
    write_json(base / "meta.json", meta)
    write_semantic_ids(cfg.semantic_ids_path, song_ids, codes)
    write_json(cfg.semantic_meta_path, meta)
    return base
