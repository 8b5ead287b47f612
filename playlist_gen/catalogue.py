"""The catalogue every recommender draws on: clusters -> songs, names, training counts and training playlists.

`SongIndex` maps clusters to their songs (most popular in the training split first) with names and artists;
`Catalogue` adds the training playlists (for title kNN and popularity) and integer song codes. Both are cached
together as arrays in one .npz file (`song_index.npz`: strings as UTF-8 bytes and offsets, no pickles), rebuilt when
an input file changes, so generate_playlist.py starts without pandas and without re-deriving the arrays.
"""

import json
import logging
import os
import threading
import zipfile
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

import numpy as np

from config import PICKS

from .io import PipelineError, atomic_write, mapped_npz, read_json, write_npz

log = logging.getLogger(__name__)


class SongIndex:
    """Clusters -> songs (most frequent in training playlists first), and song names/artists."""

    def __init__(self, cluster_songs: dict, counts: dict, names: dict):
        self.cluster_songs = cluster_songs  # tuple -> [song_id, ...], most popular first
        self.counts = counts  # song_id -> training-playlist occurrences (songs with IDs)
        self.names = names  # song_id -> (name, artist)
        self.song_cluster = {s: c for c, songs in cluster_songs.items() for s in songs}

    @classmethod
    def build(cls, song_to_ids: dict, train_counts: dict, song_info, named=()) -> "SongIndex":
        """`named`: other songs (those of training playlists) whose names the index keeps too."""
        groups = {}
        for sid, t in song_to_ids.items():
            groups.setdefault(t, []).append(sid)
        cluster_songs = {t: sorted(s, key=lambda x: (-train_counts.get(x, 0), x)) for t, s in sorted(groups.items())}
        info = song_info[song_info["song_id"].isin(set(song_to_ids) | set(named))]
        names = dict(zip(info["song_id"], zip(info["name"], info["artist"])))
        counts = {s: int(train_counts[s]) for s in song_to_ids if train_counts.get(s, 0)}
        return cls(cluster_songs, counts, names)

    def name(self, song_id: str) -> tuple[str, str]:
        return self.names.get(song_id, ("unknown", "unknown"))


class _ByCode(Mapping):
    """song id -> value(its code), for the songs where `has` is true: a read-only mapping answered from arrays per
    key, never built as a dict."""

    def __init__(self, code: dict, songs: list, has: np.ndarray, value):
        self.code, self.songs, self.has, self.value = code, songs, has, value

    def __getitem__(self, song):
        i = self.code[song]
        if not self.has[i]:
            raise KeyError(song)
        return self.value(i)

    def __iter__(self):
        return (self.songs[i] for i in np.flatnonzero(self.has).tolist())

    def __len__(self) -> int:
        return int(np.count_nonzero(self.has))


class _ClusterSongs(Mapping):
    """cluster tuple -> its songs, most popular first, sliced from one array of song codes per request."""

    def __init__(self, catalogue: "Catalogue", members: np.ndarray, ends: np.ndarray):
        self.catalogue, self.members = catalogue, members
        self.starts, self.ends = np.concatenate([[0], ends[:-1]]).astype(np.int64), ends

    def __getitem__(self, cluster) -> list[str]:
        i = self.catalogue.cluster_number[cluster]
        songs = self.catalogue.songs
        return [songs[j] for j in self.members[self.starts[i]:self.ends[i]].tolist()]

    def __iter__(self):
        return iter(self.catalogue.clusters)

    def __len__(self) -> int:
        return len(self.catalogue.clusters)


class _Strings:
    """The i-th of strings packed as one text and their ends (`_pack`), sliced when asked."""

    def __init__(self, data: np.ndarray, ends: np.ndarray):
        self.text, self.ends = data.tobytes().decode("utf-8"), ends

    def __getitem__(self, i: int) -> str:
        return self.text[self.ends[i - 1] if i else 0:self.ends[i]]


class ArraySongIndex(SongIndex):
    """A cached catalogue's song index: SongIndex's lookups answered from the catalogue's arrays per key. Building its
    four dicts (0.8-2M entries each) took 8.5 s of the service's 22 s start at 1M playlists."""

    def __init__(self, catalogue: "Catalogue", members: tuple[np.ndarray, np.ndarray], index_counts: np.ndarray,
                 named: np.ndarray, names: _Strings, artists: _Strings):
        code, songs = catalogue.code, catalogue.songs
        self.cluster_songs = _ClusterSongs(catalogue, *members)
        self.song_cluster = _ByCode(code, songs, catalogue.cluster >= 0,
                                    lambda i: catalogue.clusters[catalogue.cluster[i]])
        self.counts = _ByCode(code, songs, index_counts > 0, lambda i: int(index_counts[i]))
        self.names = _ByCode(code, songs, named, lambda i: (names[i], artists[i]))


class Catalogue:
    """What every recommender draws on: the song index (clusters, names) and the training playlists.

    Songs are coded 0..n-1 (`songs`: the training playlists' songs, then clustered songs no training playlist
    has); `counts` are training-playlist occurrences, `cluster` each song's number in `clusters` (sorted tuples,
    the model's trie order; -1: no semantic ID), `in_cluster` P(song | its cluster) from the counts."""

    def __init__(self, index: SongIndex, train_texts: list[str], train_songs: list[list[str]],
                 smoothing: float = 0.5, train_skipped: list[list[str]] | None = None):
        self.index, self.train_texts, self.train_songs, self.smoothing = index, train_texts, train_songs, smoothing
        songs = dict.fromkeys(s for ss in train_songs for s in ss)
        songs.update(dict.fromkeys(index.song_cluster))
        self.songs = list(songs)
        self.code = {s: i for i, s in enumerate(self.songs)}
        self.train_flat = _flat([np.fromiter((self.code[s] for s in dict.fromkeys(ss)), dtype=np.int64)
                                 for ss in train_songs])
        skipped = train_skipped or [[] for _ in train_songs]  # listeners' skips (feedback playlists only)
        self.skipped_flat = _flat([np.fromiter((self.code[s] for s in dict.fromkeys(ss) if s in self.code),
                                               dtype=np.int64) for ss in skipped])
        self.clusters = sorted(index.cluster_songs)
        number = self.cluster_number
        self.cluster = np.full(len(self.songs), -1, dtype=np.int64)
        for song, c in index.song_cluster.items():
            self.cluster[self.code[song]] = number[c]
        counts = self._count()
        by_id = np.argsort(np.array(self.songs, dtype=object)).argsort() if self.songs else np.zeros(0, np.int64)
        self._rank(np.lexsort((by_id, -counts)))  # most frequent first, ties by song id

    def _count(self) -> np.ndarray:
        self.counts = np.bincount(self.train_flat[0], minlength=len(self.songs)).astype(np.float64)
        return self.counts

    def _rank(self, popular: np.ndarray) -> None:
        self.popular = popular
        self.pop_rank = np.empty(len(self.songs), dtype=np.int64)
        self.pop_rank[self.popular] = np.arange(len(self.songs))
        self.in_cluster = self._song_given_cluster(self.smoothing)

    @cached_property
    def cluster_number(self) -> dict[tuple, int]:
        """Cluster tuple -> its number in `clusters` (built once: ~800k clusters at 1M playlists)."""
        return {c: i for i, c in enumerate(self.clusters)}

    # the song matrices may be asked for by the warming thread and the loading at once: one lock each, so that the
    # transposition does not hold up the recommenders that need `members` alone
    _members_lock, _by_song_lock = threading.Lock(), threading.Lock()

    @property
    def members(self):
        """(training playlists, songs) 0/1 float32 CSR of the training playlists' songs, built once and shared by
        the recommenders and the session's reasons."""
        with self._members_lock:
            if "_members" not in vars(self):
                self._members = song_matrix(self.train_flat, len(self.songs))
            return self._members

    @property
    def by_song(self):
        """(songs, training playlists) float32 CSR, `members` transposed: the playlists holding each song, read by
        co-occurrence and the reasons of playlists with seed songs (`warm` builds it in the background)."""
        with self._by_song_lock:
            if "_by_song" not in vars(self):
                self._by_song = self.members.T.tocsr()
            return self._by_song

    def warm(self) -> threading.Thread:
        """Build the song matrices in a background thread: scipy's transposition (2.3 s at 1M playlists) runs
        without the GIL, on the core the rest of a start-up leaves idle, instead of in the first request with seed
        songs."""
        thread = threading.Thread(target=self._build_quietly, name="catalogue-warm", daemon=True)
        thread.start()
        return thread

    def _build_quietly(self) -> None:
        try:
            _ = self.by_song
        except Exception as e:  # the request that needs the matrix builds it again and says what failed
            log.debug("warming the song matrices failed (%s); a request that needs them will build them", e)

    @cached_property
    def text_table(self) -> tuple[list[str], np.ndarray]:
        """(the distinct training texts, each training playlist's text among them): what the cache keeps (850k
        titles at 1M playlists are ~33k distinct) and the kNN recommenders fit on."""
        from .tfidf import distinct_rows

        return distinct_rows(self.train_texts)

    @cached_property
    def train_texts(self) -> list[str]:
        """Set by __init__; a cached catalogue derives it from `text_table` when asked."""
        distinct, rows = self.text_table
        return [distinct[i] for i in rows.tolist()]

    @cached_property
    def train_codes(self) -> list[np.ndarray]:
        """Each training playlist's distinct song codes (`train_flat` cut per playlist)."""
        return _split(*self.train_flat)

    @cached_property
    def skipped_codes(self) -> list[np.ndarray]:
        """Each training playlist's songs its listener skipped (feedback playlists; empty for the others)."""
        return _split(*self.skipped_flat)

    @cached_property
    def train_songs(self) -> list[list[str]]:
        """Set by __init__; a cached catalogue reads it back when asked (only the sequential recommender does): the
        entries are the largest array of the cache (62M codes at 1M playlists, 1-1.5 s to read at every start)."""
        z = mapped_npz(self._path)
        if z["sources"].tobytes() != self._sources:
            raise PipelineError(f"{self._path} was rebuilt while in use; start again")
        entries, ends = z["entries_data"], z["entries_ends"]
        return [[self.songs[c] for c in codes] for codes in _split(entries.tolist(), ends)]

    def _song_given_cluster(self, smoothing: float) -> np.ndarray:
        """P(song | its cluster): training counts + `smoothing`, normalised within the cluster; 0 without one."""
        has = self.cluster >= 0
        weight = np.where(has, self.counts + smoothing, 0.0)
        totals = np.bincount(self.cluster[has], weights=weight[has], minlength=len(self.clusters))
        out = np.zeros(len(self.songs))
        out[has] = weight[has] / np.maximum(totals[self.cluster[has]], 1e-12)
        return out

    def top_songs(self, scores: np.ndarray, k: int, exclude=()) -> np.ndarray:
        """Codes of the k best songs by score (ties: the more popular first). Songs scoring 0 follow every positive
        one in popularity order, so a list has k songs whenever the catalogue has them."""
        scores = scores.copy()
        scores[list(exclude)] = -1.0
        positive = np.flatnonzero(scores > 0)
        if len(positive) > k:  # the k best; among songs tied with the k-th, the more popular
            kth = np.partition(scores[positive], len(positive) - k)[len(positive) - k]
            tied = positive[scores[positive] == kth]
            tied = tied[np.argsort(self.pop_rank[tied], kind="stable")]
            above = positive[scores[positive] > kth]
            positive = np.concatenate([above, tied[:k - len(above)]])
        ranked = positive[np.lexsort((self.pop_rank[positive], -scores[positive]))]
        if len(ranked) < k:
            rest = self.popular[scores[self.popular] == 0][:k - len(ranked)]
            ranked = np.concatenate([ranked, rest])
        return ranked

    def clusters_by_mass(self, codes: np.ndarray, scores: np.ndarray, n: int) -> tuple[list[tuple], list[float]]:
        """The n clusters holding the most score among songs `codes`, and that score."""
        c = self.cluster[codes]
        keep = c >= 0
        mass = np.bincount(c[keep], weights=scores[keep], minlength=len(self.clusters))
        present = np.unique(c[keep])
        order = present[np.lexsort((present, -mass[present]))][:n]
        return [self.clusters[i] for i in order], mass[order].tolist()

    def save(self, path, sources: dict) -> None:
        """Everything as arrays (np.load reads them back without pickles); `sources`: the input files' stamps."""
        names = [self.index.names.get(s) for s in self.songs]
        entries = [np.fromiter((self.code[s] for s in ss), dtype=np.int64) for ss in self.train_songs]
        arrays = {"version": np.array(CACHE_VERSION), "sources": _bytes(json.dumps(sources)),
                  "songs": _pack(self.songs), "texts": _pack(self.text_table[0]), "text_rows": self.text_table[1],
                  "names": _pack(n[0] if n else "" for n in names),
                  "artists": _pack(n[1] if n else "" for n in names),
                  "named": np.array([n is not None for n in names], dtype=bool),
                  "counts": self.counts.astype(np.int32), "cluster": self.cluster,
                  "clusters": np.array(self.clusters, dtype=np.int64).reshape(len(self.clusters), -1),
                  "popular": self.popular,
                  "index_counts": np.array([self.index.counts.get(s, 0) for s in self.songs], dtype=np.int64),
                  "members": _flat([np.array([self.code[s] for s in self.index.cluster_songs[c]], dtype=np.int64)
                                    for c in self.clusters]),
                  "distinct": _narrow(self.train_flat, len(self.songs)),
                  "entries": _narrow(_flat(entries), len(self.songs)), "skipped": self.skipped_flat}
        arrays = {k: v for k, v in arrays.items() if not isinstance(v, tuple)} | {
            f"{k}_{part}": a for k, v in arrays.items() if isinstance(v, tuple) for part, a in zip(("data", "ends"), v)}
        with atomic_write(path, "wb") as f:
            write_npz(f, arrays)

    @classmethod
    def load(cls, path, sources: dict | None = None, smoothing: float = 0.5) -> "Catalogue | None":
        """The cached catalogue, or None when it is missing, unreadable or was built from other input files."""
        try:
            z = mapped_npz(path)  # the arrays are mapped, not read: a start touches the pages it uses
            if int(z["version"]) != CACHE_VERSION or (
                    sources is not None and json.loads(z["sources"].tobytes()) != sources):
                return None
            cat = cls.__new__(cls)
            cat.smoothing = smoothing
            cat.songs = _unpack(z["songs_data"], z["songs_ends"])
            cat.text_table = _unpack(z["texts_data"], z["texts_ends"]), z["text_rows"]
            cat.code = dict(zip(cat.songs, range(len(cat.songs))))
            cat.cluster, cat.clusters = z["cluster"], [tuple(c) for c in z["clusters"].tolist()]
            cat.train_flat = z["distinct_data"], z["distinct_ends"]
            cat.skipped_flat = z["skipped_data"], z["skipped_ends"]
            cat._path, cat._sources = path, z["sources"].tobytes()
            cat.counts = z["counts"].astype(np.float64)  # np.bincount of the 50M entries took 0.7-3 s at 1M
            cat._rank(z["popular"])
            cat.index = ArraySongIndex(cat, (z["members_data"], z["members_ends"]), z["index_counts"], z["named"],
                                       _Strings(z["names_data"], z["names_ends"]),
                                       _Strings(z["artists_data"], z["artists_ends"]))
            return cat
        except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile):
            return None


CACHE_VERSION = 6  # 4: listeners' skipped songs; 5: each distinct training text once; 6: the songs' counts


def top_indices(values: np.ndarray, n: int) -> np.ndarray:
    """np.argsort(-values, kind="stable")[:n] (the n largest, ties by index) without sorting all of them: at 1M
    playlists a request ranks ~800k clusters."""
    top = np.arange(len(values))
    if 0 < n < len(values):  # the candidates: every value at least the n-th largest (ties kept)
        top = np.flatnonzero(values >= -np.partition(-values, n - 1)[n - 1])
    return top[np.lexsort((top, -values[top]))][:n]


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _pack(strings) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte array and the end of each in characters (read back with one decode)."""
    strings = list(strings)
    return _bytes("".join(strings)), np.cumsum([len(s) for s in strings], dtype=np.int64)


def _unpack(data: np.ndarray, ends: np.ndarray) -> list[str]:
    text, ends = data.tobytes().decode("utf-8"), ends.tolist()
    return [text[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def _flat(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    data = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return data, np.cumsum([len(a) for a in arrays], dtype=np.int64)


def song_matrix(flat: tuple[np.ndarray, np.ndarray], n_songs: int):
    """(playlists, songs) 0/1 float32 CSR from (codes, ends) per playlist, each row's codes distinct. Built as CSR
    directly: a COO matrix's conversion sorted 55M entries at 1M playlists. float32 is exact and half of float64's
    440 MB there; products take the rows they need (recommend.neighbour_votes), as scipy converts a whole operand to
    the other's dtype."""
    import scipy.sparse as sp

    data, ends = flat
    indptr = np.concatenate([[0], ends]).astype(np.int64)
    return sp.csr_matrix((np.ones(len(data), dtype=np.float32), data, indptr), shape=(len(ends), n_songs))


def _narrow(flat: tuple[np.ndarray, np.ndarray], n_songs: int) -> tuple[np.ndarray, np.ndarray]:
    """Song codes as int32 when they fit (always, short of 2^31 songs): the cache's largest arrays read at every
    start are then half as large (400 -> 200 MB at 1M playlists), and scipy takes int32 indices without a copy."""
    data, ends = flat
    return (data.astype(np.int32) if n_songs < 2**31 else data), ends


def _split(data, ends: np.ndarray) -> list:
    """`data` (an array or a list) cut at `ends`."""
    ends = ends.tolist()
    return [data[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def file_stamps(paths) -> dict:
    """path -> [size, mtime_ns]: what a cache was built from."""
    out = {}
    for p in paths:
        st = os.stat(p)
        out[str(Path(p).resolve())] = [st.st_size, st.st_mtime_ns]
    return out


def pick_songs(tuples, index: SongIndex, pick: str, rng, used=None) -> list[tuple[str, tuple]]:
    """One song per cluster, never the same song twice; clusters with no song left are skipped.

    pick=popular: the cluster's most frequent training song not yet used; random: uniform;
    weighted: proportional to (training occurrences + 1).
    """
    if pick not in PICKS:
        raise PipelineError(f"unknown pick {pick!r}; use one of {PICKS}")
    used = set() if used is None else used
    out = []
    for t in tuples:
        cands = [s for s in index.cluster_songs.get(tuple(t), ()) if s not in used]
        if not cands:
            continue
        if pick == "popular":
            song = cands[0]
        elif pick == "random":
            song = cands[rng.integers(len(cands))]
        else:
            w = np.array([index.counts.get(s, 0) + 1.0 for s in cands])
            song = cands[rng.choice(len(cands), p=w / w.sum())]
        used.add(song)
        out.append((song, tuple(t)))
    return out


def fill_from_clusters(picked: list[str], tuples, index: SongIndex, k: int, exclude=()) -> list[str]:
    """Extend a song list to `k` with the other songs of its clusters, round robin, popular first (none of
    `exclude`)."""
    out, seen = list(picked[:k]), set(picked) | set(exclude)
    pools = [[s for s in index.cluster_songs.get(tuple(t), ()) if s not in seen] for t in dict.fromkeys(tuples)]
    depth = 0
    while len(out) < k and any(len(p) > depth for p in pools):
        for p in pools:
            if depth < len(p) and p[depth] not in seen and len(out) < k:
                out.append(p[depth])
                seen.add(p[depth])
        depth += 1
    return out


def index_inputs(cfg) -> list[Path]:
    """The files the song index is built from. A missing one is named with the stage that writes it; those
    messages are imported only then, as playlist_gen.corpus/data import pandas (0.4 s CPU at the CLI's start)."""
    import importlib

    from .io import require_file

    made_by = {cfg.semantic_ids_path: "semantic_ids", cfg.split_path("train"): "corpus",
               cfg.playlist_song_path: "data", cfg.song_info_path: "data"}  # path -> module with its MADE_BY
    for path, module in made_by.items():
        if not Path(path).exists():
            require_file(path, importlib.import_module(f".{module}", __package__).MADE_BY)
    return [Path(p) for p in made_by]


def load_catalogue(cfg, playlists=None, write: bool = True) -> Catalogue:
    """The cached catalogue when it was built from the current files, else build it (and cache it)."""
    sources = file_stamps(index_inputs(cfg))
    smoothing = cfg.recommend.song_smoothing
    catalogue = Catalogue.load(cfg.song_index_path, sources, smoothing)
    if catalogue is not None:
        return catalogue
    from collections import Counter

    from .corpus import read_split
    from .data import load_playlists
    from .semantic_ids import load_semantic_ids

    log.info("building the song index %s", cfg.song_index_path)
    song_to_ids, _ = load_semantic_ids(cfg)
    playlists = load_playlists(cfg) if playlists is None else playlists
    train = read_split(cfg, "train")
    song_lists = playlists.song_lists()
    liked, skipped = read_feedback_playlists(cfg.feedback_playlists_path)
    song_lists = {**song_lists, **liked}
    train_songs = [song_lists.get(g, []) for g in train["glid"]]
    counts = Counter(s for songs in train_songs for s in dict.fromkeys(songs))
    index = SongIndex.build(song_to_ids, counts, playlists.song_info, named=counts)
    catalogue = Catalogue(index, train["title"].tolist(), train_songs, smoothing,
                          [skipped.get(g, []) for g in train["glid"]])
    if write:
        catalogue.save(cfg.song_index_path, sources)
    return catalogue


def read_feedback_playlists(path) -> tuple[dict, dict]:
    """(glid -> liked songs, glid -> skipped songs) of the listeners' playlists prepare_corpus.py --corpus.feedback
    took (feedback_playlists.json; one written before skips were kept maps glid -> liked songs); empty without it."""
    if not Path(path).exists():
        return {}, {}
    data = read_json(path, "re-run `python prepare_corpus.py`")
    if not isinstance(data, dict) or not {"liked", "skipped"} <= data.keys():
        return data, {}
    return data["liked"], data["skipped"]
