"""Stage 0: write (or check) the four input files every later stage reads, in --data_dir.

--source=demo  generate the seeded demo world (songs, themed playlists with Chinese/English titles, vectors).
--source=mpd --path=P  import Spotify Million Playlist Dataset slices (one .json/.json.gz file or a folder).
--source=csv   check your own song_vectors.csv, gen_playlist_info.csv, gen_playlist_song.csv, gen_song_info.csv.
When there are no song vectors (mpd; csv without song_vectors.csv) they are built from playlist
co-occurrence (--vectors.*) into song_vectors_built.csv; your own files are never overwritten. Counts and a
vector quality check go to data_report.json, and manifests/data.json records what was read and written.
"""

import logging
from dataclasses import dataclass

from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.io import PipelineError, write_json

log = logging.getLogger(__name__)

SECTIONS = ("data", "demo", "vectors", "corpus")  # the config sections --help lists first
GIVEN_SHARE_WARN, GIVEN_SHARE_STOP = 0.5, 0.9  # playlist entries without a given vector: warn, stop


@dataclass
class Stage0:
    """What one source produced: tables to write (None: the user's files, kept as they are) and vectors."""

    tables: tuple | None  # (info, songs, song_info) in standard column names
    playlists: object  # the Playlists the report counts
    ids: list
    vectors: object  # float32 array aligned with ids
    vectors_info: dict
    built: bool  # the vectors were built here (else given: by the user or the demo world)
    extra: dict  # more report fields


def counts(info, songs, song_info, vector_ids) -> dict:
    """What later stages will see: playlists, entries, songs, and how many entries lack a vector."""
    import pandas as pd

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


def training_vectors(cfg, info, songs):
    """Co-occurrence vectors from the playlists of the training split only (the split prepare_corpus.py draws):
    validation and test playlists must not shape the semantic IDs the model is scored with."""
    from playlist_gen.corpus import split_labels_for, split_settings
    from playlist_gen.song_vectors import build_song_vectors

    train = info["playlist_id"][split_labels_for(info, cfg.corpus, cfg.seed) == "train"]
    ids, X, vector_info = build_song_vectors(songs[songs["playlist_id"].isin(train)], cfg.vectors, cfg.seed)
    vector_info.update(split=split_settings(cfg.corpus, cfg.seed), playlists_used=int(len(train)))
    return ids, X, vector_info


def from_demo(cfg) -> Stage0:
    from playlist_gen.data import Playlists
    from playlist_gen.demo_world import make_demo_world

    w = make_demo_world(cfg)
    return Stage0((w.info, w.songs, w.song_info), Playlists(w.info, w.songs, w.song_info), w.song_ids, w.vectors,
                  {"method": "demo (given)", "dim": int(w.vectors.shape[1])}, built=False, extra={})


def from_mpd(cfg) -> Stage0:
    from playlist_gen.data import Playlists
    from playlist_gen.mpd import read_mpd, to_frames

    tables = read_mpd(cfg.data.path, cfg.data.mpd_max_playlists, cfg.data.workers)
    info, songs, song_info = to_frames(tables)
    skipped, tables = tables.skipped, None  # free the interned tables before the SVD
    ids, X, vector_info = training_vectors(cfg, info, songs)
    return Stage0((info, songs, song_info), Playlists(info, songs, song_info), ids, X, vector_info, built=True,
                  extra={"skipped": skipped})


def from_csv(cfg) -> Stage0:
    from playlist_gen.data import load_playlists, load_song_vectors

    playlists = load_playlists(cfg)
    if cfg.song_vectors_path.exists():
        refuse_legacy_built_vectors(cfg)
        ids, X = load_song_vectors(cfg.song_vectors_path)
        return Stage0(None, playlists, ids, X, {"method": "given", "dim": int(X.shape[1])}, built=False, extra={})
    log.info("%s not found: building song vectors from playlist co-occurrence", cfg.song_vectors_path)
    ids, X, vector_info = training_vectors(cfg, playlists.info, playlists.songs)
    return Stage0(None, playlists, ids, X, vector_info, built=True, extra={})


def refuse_legacy_built_vectors(cfg) -> None:
    """Before built vectors had their own file, they were written as song_vectors.csv; a rerun then took them for
    the user's own and never rebuilt them. Such a file is recognised by the old data_report.json."""
    from playlist_gen import manifest
    from playlist_gen.io import read_json

    if manifest.load(cfg, "data") is None and cfg.data_report_path.exists():
        method = read_json(cfg.data_report_path, "").get("vectors", {}).get("method", "given")
        if method not in ("given", "demo (given)"):
            raise PipelineError(f"{cfg.song_vectors_path} was built by an earlier prepare_data.py ({method} "
                                f"vectors, says {cfg.data_report_path}), not given by you: delete it, and the "
                                f"vectors are rebuilt from the current playlists into {cfg.built_vectors_path}")


def check_given_vectors(cfg, stage0: Stage0, report: dict) -> None:
    """Given vectors must be for the playlists' songs: ids are compared as text (`000001` is not `1`)."""
    missing = report["entries_without_vector"] / max(report["entries"], 1)
    if stage0.built or missing <= GIVEN_SHARE_WARN:
        return
    songs = stage0.playlists.songs["song_id"]
    lacking = songs[~songs.isin(set(stage0.ids))].unique()[:3].tolist()
    what = (f"{100 * missing:.1f}% of the {report['entries']:,} playlist entries have no vector in "
            f"{cfg.song_vectors_path} (songs such as {lacking}; the vectors have ids such as {stage0.ids[:3]}); "
            "song ids are compared as text, so `000001` is not `1`")
    if missing > GIVEN_SHARE_STOP:
        raise PipelineError(f"{what}: make the ids match, or delete the vectors file to build vectors from the "
                            "playlists")
    log.warning("%s", what)


def vectors_path(cfg, stage0: Stage0):
    return cfg.built_vectors_path if stage0.built else cfg.song_vectors_path


def written_files(cfg, stage0: Stage0) -> list:
    """The files this run writes (data_report.json besides): for --source=csv only built vectors."""
    tables = [cfg.playlist_info_path, cfg.playlist_song_path, cfg.song_info_path] if stage0.tables else []
    return tables + ([vectors_path(cfg, stage0)] if stage0.tables or stage0.built else [])


def protect_user_files(cfg, targets: list, used_vectors) -> None:
    """Refuse to overwrite a file of data_dir that this stage did not write: the user's own data. Vectors the
    previous run wrote that this one neither writes nor uses are removed, so they are never taken for current."""
    from playlist_gen import manifest

    foreign = [p for p in targets if p.exists() and not manifest.owned(cfg, "data", p)]
    if foreign:
        raise PipelineError(f"{foreign[0]} was not written by prepare_data.py (or was changed since): --source="
                            f"{cfg.data.source} would overwrite it; move your files, or choose another --data_dir "
                            "(`make demo` uses demo/data)")
    for p in (cfg.song_vectors_path, cfg.built_vectors_path):  # (playlist files are rewritten, or the input)
        if p not in targets and p != used_vectors and p.exists() and manifest.owned(cfg, "data", p):
            log.info("removing %s of the previous import", p)
            p.unlink()


def write_outputs(cfg, stage0: Stage0, report: dict) -> None:
    """Every file of the data, the manifest marking the set unfinished until the last one is written."""
    from playlist_gen import manifest
    from playlist_gen.data import write_playlists, write_song_vectors

    targets = written_files(cfg, stage0)
    protect_user_files(cfg, targets, vectors_path(cfg, stage0))
    command = f"python prepare_data.py --source={cfg.data.source}"
    manifest.begin(cfg, "data", targets + [cfg.data_report_path], command)
    if stage0.tables:
        write_playlists(cfg, *stage0.tables)
    if vectors_path(cfg, stage0) in targets:
        write_song_vectors(vectors_path(cfg, stage0), stage0.ids, stage0.vectors, cfg.data.song_id_col)
    write_json(cfg.data_report_path, report)
    save_config(cfg, "prepare_data")
    files = [cfg.playlist_info_path, cfg.playlist_song_path, cfg.song_info_path, vectors_path(cfg, stage0)]
    manifest.finish(cfg, "data", files + [cfg.data_report_path], command=command,
                    given=[p for p in files if p not in targets], source=cfg.data.source,
                    vectors={"file": manifest.key_of(cfg, vectors_path(cfg, stage0)), "built": stage0.built})


def log_summary(report: dict) -> None:
    for key in ("playlists", "entries", "songs_in_playlists", "songs_with_vectors", "entries_without_vector",
                "distinct_titles"):
        log.info("%-24s %s", key, f"{report[key]:,}")
    if report["entries_without_vector"]:
        log.info("%.1f%% of playlist entries have no song vector (no semantic ID later)",
                 100 * report["entries_without_vector"] / max(report["entries"], 1))


def main(argv=None) -> dict:
    cfg = parse_config(argv, __doc__, SECTIONS)
    from playlist_gen.song_vectors import quality_check

    stage0 = {"demo": from_demo, "mpd": from_mpd, "csv": from_csv}[cfg.data.source](cfg)
    p = stage0.playlists
    quality = quality_check(stage0.ids, stage0.vectors, p.songs, p.song_info, cfg.vectors, cfg.seed)
    report = {"source": cfg.data.source, "data_dir": str(cfg.data_dir), "seed": cfg.seed,
              **counts(p.info, p.songs, p.song_info, stage0.ids), **stage0.extra, "vectors": stage0.vectors_info,
              "quality": quality}
    check_given_vectors(cfg, stage0, report)
    write_outputs(cfg, stage0, report)
    log_summary(report)
    log.info("wrote %s and %s", cfg.data_report_path, cfg.manifest_path("data"))
    return report


if __name__ == "__main__":
    run_script(main)
