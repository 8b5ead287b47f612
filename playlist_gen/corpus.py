"""Stage 2: playlists -> (input text, semantic-ID target) pairs in seeded train/val/test splits.

The input text is the playlist title (NFKC, whitespace cleaned; Chinese, emoji and mixed text kept),
optionally followed by other playlist columns. The target is the playlist's songs, each as its tuple
of level tokens (`<a_12> <b_7>`), in playlist order. Splits are grouped by normalised title by default,
so a title seen in training never appears in validation or test.
"""

import csv
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np
import pandas as pd

from . import tokens
from .io import PipelineError, atomic_write, read_json, require_file

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
COLUMNS = ("glid", "title", "target")
MADE_BY = "run `python prepare_corpus.py` first"
EXTRA_SEPARATOR = " | "  # between the title and each extra column in the input text
_SPACE_RE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """NFKC, then every run of whitespace (tabs, newlines, ideographic spaces) -> one space, stripped."""
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", str(text))).strip()


def title_key(text: str) -> str:
    """The key grouped splits use: `Chill  Vibes` and `chill vibes` are one title."""
    return clean_text(text).casefold()


def song_sort_key(song_id: str):
    """Numeric IDs in numeric order (as the original sorted them), others after, as strings."""
    return (0, int(song_id), "") if song_id.isdigit() else (1, 0, song_id)


@dataclass
class CorpusCounts:
    playlists_in: int = 0
    playlists_without_songs: int = 0
    playlists_too_short: int = 0  # fewer than min_songs songs with IDs after dropping/collapsing
    songs_in: int = 0
    songs_without_ids: int = 0
    repeats_collapsed: int = 0
    songs_truncated: int = 0
    playlists_truncated: int = 0
    missing_song_examples: list = field(default_factory=list)


def input_texts(info: pd.DataFrame, extra_columns: str) -> pd.Series:
    """The model input per playlist: the cleaned title, then each non-empty extra column."""
    extras = [c.strip() for c in extra_columns.split(",") if c.strip()]
    missing = [c for c in extras if c not in info.columns]
    if missing:
        raise PipelineError(f"--corpus.extra_columns names {missing}, not columns of the playlist info file; "
                            f"found {list(info.columns)}")
    text = info["title"].map(clean_text)
    for col in extras:
        part = info[col].map(clean_text)
        text = text.where(part.eq(""), text + EXTRA_SEPARATOR + part)
    return text


def order_songs(songs: list[str], order: str, rng: np.random.Generator) -> list[str]:
    if order == "original":
        return list(songs)
    if order == "sorted":
        return sorted(songs, key=song_sort_key)
    if order == "shuffled":
        return [songs[i] for i in rng.permutation(len(songs))]
    raise PipelineError(f"--corpus.order={order!r}: use original, sorted or shuffled")


def playlist_tuples(songs, song_to_ids, cc, rng, counts: CorpusCounts) -> list[tuple[int, ...]]:
    """One playlist's songs -> its target tuples (dropping, ordering, collapsing, truncating, counting)."""
    counts.songs_in += len(songs)
    known = [s for s in songs if s in song_to_ids]
    if len(known) < len(songs):
        counts.songs_without_ids += len(songs) - len(known)
        if len(counts.missing_song_examples) < 5:
            counts.missing_song_examples.append(next(s for s in songs if s not in song_to_ids))
    tuples = [song_to_ids[s] for s in order_songs(known, cc.order, rng)]
    if cc.collapse_repeats:
        collapsed = [t for t, _ in groupby(tuples)]
        counts.repeats_collapsed += len(tuples) - len(collapsed)
        tuples = collapsed
    if len(tuples) > cc.max_songs:
        counts.songs_truncated += len(tuples) - cc.max_songs
        counts.playlists_truncated += 1
        tuples = tuples[: cc.max_songs]  # whole tuples only
    return tuples


def build_pairs(playlists, song_to_ids: dict, cc, seed: int) -> tuple[pd.DataFrame, CorpusCounts]:
    """Every playlist with at least min_songs songs with IDs -> a row (glid, title, target, key)."""
    if cc.token_scheme not in tokens.SCHEMES:
        raise PipelineError(f"--corpus.token_scheme={cc.token_scheme!r}: use one of {tokens.SCHEMES}")
    if cc.max_songs < 1 or cc.min_songs < 1:
        raise PipelineError("--corpus.max_songs and --corpus.min_songs must be at least 1")
    counts = CorpusCounts(playlists_in=len(playlists.info))
    song_lists = playlists.song_lists()
    texts = input_texts(playlists.info, cc.extra_columns)
    rng = np.random.default_rng(seed)
    rows = []
    for pid, raw_title, text in zip(playlists.info["playlist_id"], playlists.info["title"], texts):
        songs = song_lists.get(pid)
        if not songs:
            counts.playlists_without_songs += 1
            continue
        tuples = playlist_tuples(songs, song_to_ids, cc, rng, counts)
        if len(tuples) < cc.min_songs:
            counts.playlists_too_short += 1
            continue
        rows.append((pid, text, tokens.encode(tuples, cc.token_scheme), title_key(raw_title)))
    return pd.DataFrame(rows, columns=[*COLUMNS, "key"]), counts


def split_labels(keys: pd.Series, how: str, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded 'train'/'val'/'test' label per row. `grouped` keeps all rows of one key in one split."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise PipelineError("--corpus.val_fraction and --corpus.test_fraction must be in [0, 1) and sum below 1")
    if how == "grouped":
        groups, inverse = np.unique(keys.to_numpy(dtype=str), return_inverse=True)
    elif how == "random":
        groups, inverse = np.arange(len(keys)), np.arange(len(keys))
    else:
        raise PipelineError(f"--corpus.split={how!r}: use grouped or random")
    sizes = np.bincount(inverse, minlength=len(groups))
    perm = np.random.default_rng(seed).permutation(len(groups))
    before = np.cumsum(sizes[perm]) - sizes[perm]  # rows already assigned when a group's turn comes
    n = len(keys)
    test_end, val_end = test_fraction * n, (test_fraction + val_fraction) * n
    group_label = np.empty(len(groups), dtype=object)
    group_label[perm] = np.where(before < test_end, "test", np.where(before < val_end, "val", "train"))
    labels = group_label[inverse] if len(groups) else np.array([], dtype=object)
    return labels


def write_split(path, df: pd.DataFrame) -> None:
    """TSV with a header; fields with tabs, quotes or newlines are quoted (csv module rules)."""
    with atomic_write(path) as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(COLUMNS)
        writer.writerows(df[list(COLUMNS)].itertuples(index=False, name=None))


def read_split(cfg, split: str) -> pd.DataFrame:
    """One split as a DataFrame of strings (glid, title, target)."""
    path = require_file(cfg.split_path(split), MADE_BY)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: malformed split file ({str(e).strip()}); {MADE_BY}") from None
    if list(df.columns) != list(COLUMNS):
        raise PipelineError(f"{path}: expected columns {list(COLUMNS)}, found {list(df.columns)}; {MADE_BY}")
    return df


def read_corpus_meta(cfg) -> dict:
    return read_json(cfg.corpus_meta_path, MADE_BY)


def corpus_meta(cc, counts: CorpusCounts, split_sizes: dict, id_meta: dict, seed: int) -> dict:
    out = {k: v for k, v in vars(counts).items() if k != "missing_song_examples"}
    out.update(
        playlists_out=sum(split_sizes.values()), splits=split_sizes, token_scheme=cc.token_scheme,
        semantic_ids_method=id_meta["method"], levels=int(id_meta["levels"]),
        codebook_sizes=[int(k) for k in id_meta["codebook_sizes"]], max_songs=cc.max_songs, min_songs=cc.min_songs,
        order=cc.order, collapse_repeats=cc.collapse_repeats, split=cc.split, extra_columns=cc.extra_columns,
        val_fraction=cc.val_fraction, test_fraction=cc.test_fraction, seed=seed,
    )
    return out


def log_counts(counts: CorpusCounts, split_sizes: dict) -> None:
    c = counts
    if c.songs_without_ids:
        log.warning("dropped %s of %s playlist songs without a semantic ID (e.g. %s)", f"{c.songs_without_ids:,}",
                    f"{c.songs_in:,}", ", ".join(map(repr, c.missing_song_examples)))
    if c.playlists_without_songs or c.playlists_too_short:
        log.warning("dropped %s playlists without songs and %s with too few songs with IDs",
                    f"{c.playlists_without_songs:,}", f"{c.playlists_too_short:,}")
    if c.playlists_truncated:
        log.info("truncated %s playlists (%s songs cut)", f"{c.playlists_truncated:,}", f"{c.songs_truncated:,}")
    if c.repeats_collapsed:
        log.info("collapsed %s consecutive repeats of one cluster", f"{c.repeats_collapsed:,}")
    log.info("corpus: %s", ", ".join(f"{k} {v:,}" for k, v in split_sizes.items()))
