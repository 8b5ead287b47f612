"""Stage 2: playlists -> (input text, semantic-ID target) pairs in seeded train/val/test splits.

The input text is the normalised playlist title (`text.normalize_title`: case folded, punctuation and emoji
dropped, spaced-out letters joined; Chinese and mixed text kept), followed by other playlist columns such as
NetEase's `tags` (`corpus.extra_columns`, by default every column of EXTRA_AUTO the info file has). The
target is the playlist's songs, each as its tuple of level tokens (`<a_12> <b_7>`), in playlist order.
Splits are drawn over every playlist of the info file, grouped by normalised title by default, so a title
seen in training never appears in validation or test; prepare_data.py builds co-occurrence song vectors
from the same training split (`split_labels_for`), so no held-out playlist shapes the semantic IDs.
"""

import csv
import io
import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from config import COMMANDS, ORDERS

from . import tokens
from .io import PipelineError, atomic_write, read_json, require_file
from .text import EXTRA_SEPARATOR, clean_text, normalize_title, title_key

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SEEDED = "train_seeded"  # continuation examples of the training playlists (a split file of their own)
COLUMNS = ("glid", "title", "target")
MADE_BY = f"run `{COMMANDS['corpus']}` first"
EXTRA_AUTO = ("tags",)  # extra_columns=auto: these columns, when the info file has them
TARGET_CHUNK = 100_000  # playlists joined per step: bounds the per-entry string list (memory)
_TSV_SPECIAL = re.compile(r'[\t\n\r"]')  # characters that may make the csv module quote a field


def song_sort_key(song_id: str):
    """Numeric IDs in numeric order (as the original sorted them), others after, as strings."""
    return (0, int(song_id), "") if song_id.isdigit() else (1, 0, song_id)


@dataclass
class CorpusCounts:
    playlists_in: int = 0
    playlists_without_songs: int = 0
    playlists_too_short: int = 0  # training playlists with fewer than min_songs songs with IDs
    songs_in: int = 0
    songs_without_ids: int = 0
    repeats_collapsed: int = 0
    songs_truncated: int = 0
    playlists_truncated: int = 0
    missing_song_examples: list = field(default_factory=list)


def extra_columns(info: pd.DataFrame, setting: str) -> list[str]:
    """The playlist columns appended to the title: `auto` = those of EXTRA_AUTO present, `none` = none, or a
    comma-separated list (each must exist)."""
    if setting.strip() == "auto":
        return [c for c in EXTRA_AUTO if c in info.columns]
    extras = [c.strip() for c in setting.split(",") if c.strip() and c.strip() != "none"]
    missing = [c for c in extras if c not in info.columns]
    if missing:
        raise PipelineError(f"--corpus.extra_columns names {missing}, not columns of the playlist info file; "
                            f"found {list(info.columns)} (or use auto / none)")
    return extras


def input_texts(info: pd.DataFrame, extras: list[str], normalize: bool = True) -> pd.Series:
    """The model input per playlist: the normalised (else only cleaned) title, then each non-empty extra column
    (text.input_text for a whole table)."""
    clean = normalize_title if normalize else clean_text
    text = _map_distinct(info["title"], clean)
    for col in extras:
        part = _map_distinct(info[col], clean)
        text = text.where(part.eq(""), text + EXTRA_SEPARATOR + part)
    return text


def _map_distinct(values: pd.Series, fn) -> pd.Series:
    """`values.map(fn)` calling fn once per distinct value (MPD: ~1M titles, far fewer distinct ones)."""
    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    mapped = np.array([fn(v) for v in distinct], dtype=object)
    return pd.Series(mapped[codes], index=values.index, dtype=object)


def entry_table(playlists) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """(info row, song code) per entry of a playlist in the info file, grouped by info row in info order
    (file order within a playlist), and the song IDs the codes index. Entries of other playlists are left out."""
    from .song_vectors import entry_codes

    p_codes, s_codes, p_ids, song_ids = entry_codes(playlists.songs)
    row_of_code = pd.Index(playlists.info["playlist_id"]).get_indexer(p_ids).astype(np.int32)
    rows = row_of_code[p_codes]
    if len(rows) and rows.min() < 0:
        known = rows >= 0
        rows, s_codes = rows[known], s_codes[known]
    if len(rows) > 1 and (rows[1:] < rows[:-1]).any():  # the files list each playlist's songs together: no sort
        order = np.argsort(rows, kind="stable")
        rows, s_codes = rows[order], s_codes[order]
    return rows, s_codes, song_ids


def song_tuple_ids(song_ids: pd.Index, song_to_ids: dict, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """Per song code its tuple id (-1: no semantic ID), and per tuple id its tokens as one string."""
    index = {}
    tuple_of_song = np.fromiter(
        (-1 if (t := song_to_ids.get(s)) is None else index.setdefault(t, len(index)) for s in song_ids.tolist()),
        dtype=np.int32, count=len(song_ids))
    levels = len(next(iter(index), ()))
    codes = np.array(list(index), dtype=np.int64).reshape(len(index), levels)
    return tuple_of_song, tokens.tuple_strings(codes, scheme)


def sort_ranks(song_ids: pd.Index) -> np.ndarray:
    """Per song code its rank under `song_sort_key`; songs with equal keys (`007`, `7`) share a rank, so a stable
    sort by rank keeps their playlist order, as `sorted(songs, key=song_sort_key)` does."""
    keys = [song_sort_key(s) for s in song_ids.tolist()]
    rank = np.empty(len(keys), dtype=np.int64)
    current, previous = -1, None
    for i in sorted(range(len(keys)), key=keys.__getitem__):
        if keys[i] != previous:
            current, previous = current + 1, keys[i]
        rank[i] = current
    return rank


def order_entries(rows: np.ndarray, songs: np.ndarray, song_ids: pd.Index, order: str, seed: int) -> np.ndarray:
    """The permutation that puts each playlist's entries (grouped by row) in `order`."""
    if order == "sorted":
        within = sort_ranks(song_ids)[songs]
    else:  # shuffled: a seeded random order inside each playlist
        within = np.random.default_rng(seed).permutation(len(rows))
    span = int(within.max()) + 1 if len(within) else 1
    return np.argsort(rows.astype(np.int64) * span + within, kind="stable")


def first_per_row(rows: np.ndarray, n: int) -> np.ndarray:
    """Positions of the first entry of each of the first n distinct rows (rows ascending)."""
    return np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])[:n] if len(rows) else np.array([], dtype=np.int64)


def drop_and_order(rows, songs, song_ids, tuple_of_song, cc, seed, counts: CorpusCounts):
    """Entries -> (rows, tuple ids) of the songs with IDs in target order, collapsed; counts what it drops."""
    counts.songs_in = len(rows)
    tids = tuple_of_song[songs]
    missing = tids < 0
    if missing.any():
        counts.songs_without_ids = int(missing.sum())
        first = first_per_row(rows[missing], 5)  # the first missing song of each of the first 5 such playlists
        counts.missing_song_examples = song_ids[songs[missing][first]].tolist()
        rows, songs, tids = rows[~missing], songs[~missing], tids[~missing]
    if cc.order != "original":
        order = order_entries(rows, songs, song_ids, cc.order, seed)
        rows, tids = rows[order], tids[order]
    if cc.collapse_repeats and len(rows):
        repeat = np.r_[False, (tids[1:] == tids[:-1]) & (rows[1:] == rows[:-1])]
        counts.repeats_collapsed = int(repeat.sum())
        rows, tids = rows[~repeat], tids[~repeat]
    return rows, tids


def truncate(rows: np.ndarray, tids: np.ndarray, n_rows: int, cc, counts: CorpusCounts):
    """The first max_songs tuples of each playlist (all when max_songs is 0) -> (rows, tids, tuples per row);
    counts the cuts."""
    lengths = np.bincount(rows, minlength=n_rows)
    over = lengths - cc.max_songs
    if cc.max_songs and (over > 0).any():
        counts.songs_truncated = int(over[over > 0].sum())
        counts.playlists_truncated = int((over > 0).sum())
        starts = np.cumsum(lengths) - lengths
        keep = np.arange(len(rows)) - starts[rows] < cc.max_songs  # whole tuples only
        rows, tids = rows[keep], tids[keep]
        lengths = np.minimum(lengths, cc.max_songs)
    return rows, tids, lengths


def join_targets(rows, tids, lengths, kept_rows: np.ndarray, tuple_text: np.ndarray) -> list[str]:
    """Each kept playlist's tuple strings joined by spaces; rows ascending, entries of other rows skipped."""
    rows_kept = np.zeros(len(lengths), dtype=bool)
    rows_kept[kept_rows] = True
    keep = rows_kept[rows]
    if not keep.all():
        tids = tids[keep]
    ends = np.cumsum(lengths[kept_rows])
    starts = ends - lengths[kept_rows]
    targets = []
    for c in range(0, len(kept_rows), TARGET_CHUNK):
        a, b = int(starts[c]), int(ends[min(c + TARGET_CHUNK, len(kept_rows)) - 1])
        words = tuple_text[tids[a:b]].tolist()
        targets += [" ".join(words[i - a:j - a]) for i, j in zip(starts[c:c + TARGET_CHUNK].tolist(),
                                                                   ends[c:c + TARGET_CHUNK].tolist())]
    return targets


def check_corpus_config(cc) -> None:
    if cc.token_scheme not in tokens.SCHEMES:
        raise PipelineError(f"--corpus.token_scheme={cc.token_scheme!r}: use one of {tokens.SCHEMES}")
    if cc.max_songs < 0 or cc.min_songs < 1:
        raise PipelineError("--corpus.max_songs must be at least 0 (0 = every song) and --corpus.min_songs at least 1")
    if cc.order not in ORDERS:
        raise PipelineError(f"--corpus.order={cc.order!r}: use original, sorted or shuffled")


def build_pairs(playlists, song_to_ids: dict, cc, seed: int, labels: np.ndarray | None = None
                ) -> tuple[pd.DataFrame, CorpusCounts]:
    """Every playlist with songs -> a row (glid, title, target, row), in info order; `row` is the playlist's row in
    the info table. `labels` (split_labels_for; None: all training) decide the rest: training playlists need at least
    min_songs songs with IDs to be kept, while validation and test playlists are kept whatever their songs' IDs,
    so which playlists a method is scored on never depends on the semantic IDs; `unused` playlists are left out.

    Vectorised over all entries (66M at MPD scale): songs -> integer codes -> tuple ids; each distinct tuple's
    token string is formatted once and the targets are joins of those strings."""
    check_corpus_config(cc)
    info = playlists.info
    counts = CorpusCounts(playlists_in=len(info))
    rows, songs, song_ids = entry_table(playlists)
    with_songs = np.bincount(rows, minlength=len(info)) > 0
    counts.playlists_without_songs = int(len(info) - with_songs.sum())
    tuple_of_song, tuple_text = song_tuple_ids(song_ids, song_to_ids, cc.token_scheme)
    rows, tids = drop_and_order(rows, songs, song_ids, tuple_of_song, cc, seed, counts)
    del songs
    rows, tids, lengths = truncate(rows, tids, len(info), cc, counts)
    train = np.ones(len(info), dtype=bool) if labels is None else labels == "train"
    held_out = np.zeros(len(info), dtype=bool) if labels is None else (labels == "val") | (labels == "test")
    kept = with_songs & ((train & (lengths >= cc.min_songs)) | held_out)
    counts.playlists_too_short = int((with_songs & train & ~kept).sum())
    kept_rows = np.flatnonzero(kept)
    pairs = pd.DataFrame({
        "glid": info["playlist_id"].to_numpy(dtype=object)[kept_rows],
        "title": input_texts(info, extra_columns(info, cc.extra_columns), cc.normalize).to_numpy(
            dtype=object)[kept_rows],
        "target": join_targets(rows, tids, lengths, kept_rows, tuple_text),
        "row": kept_rows,
    })
    return pairs, counts


def split_labels(keys: pd.Series, how: str, val_fraction: float, test_fraction: float, seed: int, folds: int = 0,
                 fold: int = 0) -> np.ndarray:
    """A seeded 'train'/'val'/'test' label per row. `grouped` keeps all rows of one key in one split.

    folds = k >= 2 (cross-validation): the seeded order of the groups is cut into k parts of about equal rows; part
    `fold` is the test (test_fraction is not used) and val_fraction of the rows, from the parts after it, validate.
    The k folds' test sets cover every playlist exactly once."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise PipelineError("--corpus.val_fraction and --corpus.test_fraction must be in [0, 1) and sum below 1")
    if folds == 1 or not 0 <= fold < max(folds, 1):
        raise PipelineError(f"--corpus.folds={folds} --corpus.fold={fold}: use folds 0 (no cross-validation) or >= 2, "
                            "and a fold from 0 to folds - 1")
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
    if folds:
        part = np.minimum(before * folds // max(n, 1), folds - 1)
        rest = np.concatenate([np.flatnonzero(part > fold), np.flatnonzero(part < fold)])  # from the next part on
        rest_before = np.cumsum(sizes[perm][rest]) - sizes[perm][rest]
        ordered = np.where(part == fold, "test", "train").astype(object)
        ordered[rest[rest_before < val_fraction * n]] = "val"
    else:
        test_end, val_end = test_fraction * n, (test_fraction + val_fraction) * n
        ordered = np.where(before < test_end, "test", np.where(before < val_end, "val", "train")).astype(object)
    for split, fraction in (("test", 0 if folds else test_fraction), ("val", val_fraction)):
        train = np.flatnonzero(ordered == "train")
        if fraction > 0 and not (ordered == split).any() and len(train) > 1:
            # a large title group ("chill") jumped over this split's share: the next group fills it
            log.warning("the %s split got no title group (the largest, %r, holds %.1f%% of the playlists); it takes "
                        "the next group, %s playlists", split, str(groups[np.argmax(sizes)]),
                        100 * sizes.max() / max(n, 1), f"{sizes[perm][train[0]]:,}")
            ordered[train[0]] = split
    group_label = np.empty(len(groups), dtype=object)
    group_label[perm] = ordered
    return group_label[inverse] if len(groups) else np.array([], dtype=object)


def seed_counts(setting: str) -> list[int]:
    try:
        counts = sorted({int(k) for k in setting.split(",") if k.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 0:
        raise PipelineError(f"--corpus.seed_counts={setting!r}: give seed-song counts such as 0,1,5,10,25")
    return counts


def continuation_rows(train: pd.DataFrame, cc, levels: int, seed: int) -> pd.DataFrame:
    """`cc.continuation` extra examples per training playlist for continuing a playlist (RecSys Challenge 2018's
    categories): the input text + the semantic-ID tokens of its first k songs -> the rest of its songs, k drawn per
    example from `cc.seed_counts` (values leaving no song to predict are not drawn; k=0 is the title-only case)."""
    counts = np.array(seed_counts(cc.seed_counts))
    rng = np.random.default_rng([seed, 2])
    rows = []
    for glid, text, target in zip(train["glid"], train["title"], train["target"]):
        toks = target.split()
        n = len(toks) // levels
        allowed = counts[counts < n]
        for k in rng.choice(allowed, cc.continuation) if len(allowed) else ():
            seeds = tokens.decode(toks[:k * levels], levels, cc.token_scheme)
            rows.append((glid, tokens.with_seeds(text, seeds, cc.token_scheme), " ".join(toks[k * levels:])))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def feedback_rows(playlists, song_to_ids: dict, cc, scheme: str) -> tuple[pd.DataFrame, dict]:
    """Listeners' liked playlists (feedback_log.liked_playlists) as training rows (glid `feedback:<id>`, the title
    normalised as the corpus' titles, the liked songs' tuples in the order liked; songs without a semantic ID left
    out), and for the catalogue {"liked": glid -> liked songs (title kNN, co-occurrence and popularity count them),
    "skipped": glid -> skipped songs (negative votes in title kNN and e5 kNN)}."""
    from . import tokens

    rows, liked, skipped = [], {}, {}
    for p in playlists:
        kept = [s for s in p.liked if s in song_to_ids]
        text = normalize_title(p.title) if cc.normalize else clean_text(p.title)
        if kept and text:
            glid = f"feedback:{p.playlist_id}"
            rows.append((glid, text, tokens.encode([song_to_ids[s] for s in kept], scheme)))
            liked[glid] = kept
            skipped[glid] = [s for s in p.skipped if s in song_to_ids]
    return pd.DataFrame(rows, columns=list(COLUMNS)), {"liked": liked, "skipped": skipped}


def split_labels_for(info: pd.DataFrame, cc, seed: int) -> np.ndarray:
    """The split of every playlist of the info table (before any is dropped for lack of songs), so stage 0 can
    build song vectors from the training playlists alone and stage 2 draws the same split."""
    keys = _map_distinct(info["title"], title_key)
    labels = split_labels(keys, cc.split, cc.val_fraction, cc.test_fraction, seed, cc.folds, cc.fold)
    if cc.train_fraction < 1:  # a learning curve: a seeded share of the training playlists, the rest unused
        if not 0 < cc.train_fraction <= 1:
            raise PipelineError(f"--corpus.train_fraction={cc.train_fraction} must be in (0, 1]")
        train = np.flatnonzero(labels == "train")
        dropped = np.random.default_rng([seed, 1]).permutation(train)[round(cc.train_fraction * len(train)):]
        labels[dropped] = "unused"
    return labels


def split_settings(cc, seed: int) -> dict:
    """What decides the split: recorded with song vectors built from the training split, checked by stage 2."""
    settings = {"split": cc.split, "val_fraction": cc.val_fraction, "test_fraction": cc.test_fraction,
                "train_fraction": cc.train_fraction, "seed": seed}
    if cc.folds:  # recorded only when used, so vectors built before folds existed still match
        settings.update(folds=cc.folds, fold=cc.fold)
    return settings


def check_vector_split(cfg) -> None:
    """Song vectors built from co-occurrence saw only the training playlists of one split: stage 2 must draw that
    same split, or held-out playlists would have shaped the semantic IDs."""
    if not cfg.data_report_path.exists():
        return
    built = read_json(cfg.data_report_path, "").get("vectors", {}).get("split")
    wanted = split_settings(cfg.corpus, cfg.seed)
    if built is not None and built != wanted:
        raise PipelineError(f"{cfg.song_vectors_path} was built from the training playlists of split {built}, not "
                            f"{wanted}: re-run `python prepare_data.py` with the same --corpus.* and --seed as "
                            "this stage, or run this stage with the settings of the vectors")


def _tsv_lines(df: pd.DataFrame) -> np.ndarray:
    """One TSV line per row. Rows with a tab, quote or line break (or a non-string) go through the csv module
    (QUOTE_MINIMAL); the rest are plain joins, byte for byte what csv writes for them, ~10x faster."""
    columns = [df[c].to_numpy(dtype=object) for c in COLUMNS]
    special = np.zeros(len(df), dtype=bool)
    for column in columns:
        special |= np.fromiter((type(v) is not str or _TSV_SPECIAL.search(v) is not None for v in column),
                               dtype=bool, count=len(column))
    plain = [np.where(special, "", column) for column in columns] if special.any() else columns
    lines = plain[0] + "\t" + plain[1] + "\t" + plain[2] + "\n" if len(df) else np.array([], dtype=object)
    for i in np.flatnonzero(special):
        buffer = io.StringIO()
        csv.writer(buffer, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerow(
            [column[i] for column in columns])
        lines[i] = buffer.getvalue()
    return lines


def write_split(path, df: pd.DataFrame, chunk: int = 100_000) -> None:
    """TSV with a header; fields with tabs, quotes or newlines are quoted (csv module rules)."""
    lines = _tsv_lines(df)
    with atomic_write(path) as f:
        f.write("\t".join(COLUMNS) + "\n")
        for start in range(0, len(lines), chunk):
            f.write("".join(lines[start:start + chunk].tolist()))


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
        normalize=cc.normalize, train_fraction=cc.train_fraction, continuation=cc.continuation,
        seed_counts=cc.seed_counts, folds=cc.folds, fold=cc.fold,
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
