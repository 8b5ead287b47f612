"""Stage 0: write (or check) the four input files every later stage reads, in --data_dir.

--source=demo  generate the seeded demo world (songs, themed playlists with Chinese/English titles, vectors).
--source=mpd --path=P  import Spotify Million Playlist Dataset slices (one .json/.json.gz file or a folder).
--source=csv   check your own song_vectors.csv, gen_playlist_info.csv, gen_playlist_song.csv, gen_song_info.csv.
When there are no song vectors (mpd; csv without song_vectors.csv) they are built from playlist
co-occurrence (--vectors.*). Counts and a vector quality check go to data_report.json.
"""

import logging

import numpy as np
import pandas as pd

from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.corpus import split_labels_for, split_settings
from playlist_gen.data import load_playlists, load_song_vectors, write_playlists, write_song_vectors
from playlist_gen.demo_world import make_demo_world
from playlist_gen.io import PipelineError, write_json
from playlist_gen.mpd import read_mpd, to_frames
from playlist_gen.song_vectors import build_song_vectors, quality_check

log = logging.getLogger(__name__)

SOURCES = ("demo", "mpd", "csv")


def counts(info: pd.DataFrame, songs: pd.DataFrame, song_info: pd.DataFrame, vector_ids) -> dict:
    """What later stages will see: playlists, entries, songs, and how many entries lack a vector."""
    per_playlist = songs.groupby("playlist_id", sort=False, observed=True).size()
    has_vector = songs["song_id"].isin(pd.Index(vector_ids))
    titles = info["title"].astype(str)
    return {
        "playlists": len(info), "playlists_without_songs": int(len(info) - len(per_playlist)),
        "entries": len(songs), "songs_in_playlists": int(songs["song_id"].nunique()),
        "songs_in_song_info": len(song_info),
        "songs_without_song_info": int(songs.loc[~songs["song_id"].isin(song_info["song_id"]), "song_id"].nunique()),
        "songs_with_vectors": len(vector_ids),
        "entries_without_vector": int((~has_vector).sum()),
        "songs_without_vector": int(songs.loc[~has_vector, "song_id"].nunique()),
        "distinct_titles": int(titles.nunique()),
        "distinct_titles_normalised": int(titles.str.lower().str.split().str.join(" ").nunique()),
        "songs_per_playlist": {"min": int(per_playlist.min()), "median": float(per_playlist.median()),
                               "mean": round(float(per_playlist.mean()), 2), "max": int(per_playlist.max())},
    }


def training_vectors(cfg, info: pd.DataFrame, songs: pd.DataFrame) -> tuple[list[str], np.ndarray, dict]:
    """Co-occurrence vectors from the playlists of the training split only (the split prepare_corpus.py draws):
    validation and test playlists must not shape the semantic IDs the model is scored with."""
    train = info["playlist_id"][split_labels_for(info, cfg.corpus, cfg.seed) == "train"]
    ids, X, vector_info = build_song_vectors(songs[songs["playlist_id"].isin(train)], cfg.vectors, cfg.seed)
    vector_info.update(split=split_settings(cfg.corpus, cfg.seed), playlists_used=int(len(train)))
    return ids, X, vector_info


def from_demo(cfg) -> dict:
    world = make_demo_world(cfg)
    quality = quality_check(world.song_ids, world.vectors, world.songs, world.song_info, cfg.vectors, cfg.seed)
    write_playlists(cfg, world.info, world.songs, world.song_info)
    write_song_vectors(cfg.song_vectors_path, world.song_ids, world.vectors, cfg.data.song_id_col)
    return {**counts(world.info, world.songs, world.song_info, world.song_ids),
            "vectors": {"method": "demo (given)", "dim": int(world.vectors.shape[1])}, "quality": quality}


def from_mpd(cfg) -> dict:
    tables = read_mpd(cfg.data.path, cfg.data.mpd_max_playlists, cfg.data.workers)
    info, songs, song_info = to_frames(tables)
    skipped, tables = tables.skipped, None  # free the interned tables before the SVD
    ids, X, vector_info = training_vectors(cfg, info, songs)
    quality = quality_check(ids, X, songs, song_info, cfg.vectors, cfg.seed)
    write_playlists(cfg, info, songs, song_info)
    write_song_vectors(cfg.song_vectors_path, ids, X, cfg.data.song_id_col)
    return {**counts(info, songs, song_info, ids), "skipped": skipped,
            "vectors": vector_info, "quality": quality}


def from_csv(cfg) -> dict:
    playlists = load_playlists(cfg)
    if cfg.song_vectors_path.exists():
        ids, X = load_song_vectors(cfg.song_vectors_path)
        vector_info = {"method": "given", "dim": int(X.shape[1])}
    else:
        log.info("%s not found: building song vectors from playlist co-occurrence", cfg.song_vectors_path)
        ids, X, vector_info = training_vectors(cfg, playlists.info, playlists.songs)
    quality = quality_check(ids, X, playlists.songs, playlists.song_info, cfg.vectors, cfg.seed)
    if vector_info["method"] != "given":
        write_song_vectors(cfg.song_vectors_path, ids, X, cfg.data.song_id_col)
    return {**counts(playlists.info, playlists.songs, playlists.song_info, ids),
            "vectors": vector_info, "quality": quality}


def log_summary(report: dict) -> None:
    for key in ("playlists", "entries", "songs_in_playlists", "songs_with_vectors", "entries_without_vector",
                "distinct_titles"):
        log.info("%-24s %s", key, f"{report[key]:,}")
    if report["entries_without_vector"]:
        log.info("%.1f%% of playlist entries have no song vector (no semantic ID later)",
                 100 * report["entries_without_vector"] / max(report["entries"], 1))


def main(argv=None) -> dict:
    cfg = parse_config(argv, __doc__)
    if cfg.data.source not in SOURCES:
        raise PipelineError(f"--source={cfg.data.source!r}: choose one of {', '.join(SOURCES)}")
    report = {"demo": from_demo, "mpd": from_mpd, "csv": from_csv}[cfg.data.source](cfg)
    report = {"source": cfg.data.source, "data_dir": str(cfg.data_dir), "seed": cfg.seed, **report}
    write_json(cfg.data_report_path, report)
    log_summary(report)
    log.info("wrote %s", cfg.data_report_path)
    save_config(cfg, "prepare_data")
    return report


if __name__ == "__main__":
    run_script(main)
