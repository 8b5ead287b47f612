"""Import Spotify Million Playlist Dataset (MPD) slices into the four-file data contract.

A slice is `{"info": ..., "playlists": [{"name", "pid", "tracks": [{"track_uri", "track_name",
"artist_name", ...}], ...}]}`, plain or gzipped. A slice of normal size (MPD's are ~33 MB) is decoded
whole by msgspec against a schema that keeps only the fields used here (the rest is skipped without
building Python objects); a bigger file, or one the strict schema rejects, goes through a streaming
decoder that reads one playlist at a time (so one huge file never sits in memory as a tree) and names
the playlist and track of any problem. Songs are interned to integer codes per file and merged into
global codes in file order, and entries kept in int32 arrays, so 1M playlists / 66M entries fit in a
few GiB. Tables are built column-wise at the end.
"""

import gzip
import json
import logging
import multiprocessing
import os
import re
from array import array
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, count
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from tqdm import tqdm

from .io import PipelineError

log = logging.getLogger(__name__)

CHUNK_CHARS = 1 << 22
WHOLE_FILE_BYTES = 256 << 20  # larger (uncompressed) files are streamed: bounded memory per worker
PLAYLIST_COLUMNS = ("num_followers", "description", "modified_at", "collaborative")  # kept when present
_decoder = json.JSONDecoder()


def _natural(path: Path) -> list:
    """mpd.slice.2000-2999.json before mpd.slice.10000-10999.json."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def mpd_files(path) -> list[Path]:
    """One .json/.json.gz file, or every such file under a folder (in natural order, so it is stable)."""
    path = Path(path)
    if not str(path) or str(path) == ".":
        raise PipelineError("--source=mpd needs --path=<an MPD .json/.json.gz slice or a folder of them>")
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.name.endswith((".json", ".json.gz"))), key=_natural)
        if not files:
            raise PipelineError(f"{path}: no .json or .json.gz files in this folder")
        return files
    if not path.exists():
        raise PipelineError(f"{path} not found: point --path at an MPD slice (.json/.json.gz) or a folder of them")
    return [path]


def _open_text(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8")


class _Stream:
    """Decode the objects of the top-level "playlists" array one at a time."""

    def __init__(self, f, path: Path):
        self.f, self.path, self.buf, self.pos, self.eof = f, path, "", 0, False

    def _more(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.f.read(CHUNK_CHARS)
        except UnicodeDecodeError as e:
            raise PipelineError(f"{self.path}: not valid UTF-8 ({e.reason}); MPD slices are UTF-8 JSON") from None
        except (OSError, EOFError) as e:
            raise PipelineError(f"{self.path}: cannot read ({e}); the file is damaged or not gzip") from None
        self.buf, self.pos, self.eof = self.buf[self.pos:] + chunk, 0, not chunk
        return bool(chunk)

    def _skip_ws(self) -> str:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def _find_array(self) -> None:
        key = '"playlists"'
        while (i := self.buf.find(key, self.pos)) < 0:
            self.pos = max(self.pos, len(self.buf) - len(key))
            if not self._more():
                raise PipelineError(f"{self.path}: no \"playlists\" array; is this an MPD slice?")
        self.pos = i + len(key)
        for expected in ":[":
            if self._skip_ws() != expected:
                raise PipelineError(f"{self.path}: \"playlists\" is not followed by a JSON array")
            self.pos += 1

    def playlists(self):
        self._find_array()
        index = 0
        while True:
            c = self._skip_ws()
            if c == "]":
                return
            if index and c == ",":
                self.pos += 1
                self._skip_ws()
            elif index or not c:
                raise PipelineError(f"{self.path}, playlist {index}: expected ',' or ']' between playlists, "
                                    f"found {c or 'end of file'!r}; the file is truncated or not valid JSON")
            yield index, self._decode(index)
            index += 1

    def _decode(self, index: int) -> dict:
        while True:
            try:
                obj, end = _decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if e.pos >= len(self.buf) - 65536 and self._more():  # probably cut by the chunk border
                    continue
                raise PipelineError(f"{self.path}, playlist {index}: invalid JSON ({e.msg}); "
                                    "the file is truncated or damaged") from None
            self.pos = end
            if not isinstance(obj, dict):
                raise PipelineError(f"{self.path}, playlist {index}: expected a JSON object, "
                                    f"found {type(obj).__name__}")
            return obj


class _Track(msgspec.Struct, gc=False):  # gc=False: holds only strings, so 66M of them cost the GC nothing
    track_uri: str
    track_name: str | None = None
    artist_name: str | None = None


class _Playlist(msgspec.Struct, gc=False):  # safe: values decoded from JSON cannot form reference cycles
    pid: int | str  # anything else: the streaming reader names the playlist
    tracks: list[_Track]
    name: Any = None
    num_followers: Any = msgspec.UNSET  # UNSET: the key is absent (the column is kept only if some playlist has it)
    description: Any = msgspec.UNSET
    modified_at: Any = msgspec.UNSET
    collaborative: Any = msgspec.UNSET


class _Slice(msgspec.Struct):
    playlists: list[_Playlist]


_slice_decoder = msgspec.json.Decoder(_Slice)


@dataclass
class Packed:
    """Strings as one text and their end offsets: a worker sends a file's ~30k songs to the parent ~10x
    cheaper than as a list (pickling costs ~0.3 us per str), and the parent cuts out only the ones it needs."""

    text: str = ""
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, strings: list[str]) -> "Packed":
        return cls("".join(strings), np.cumsum(np.fromiter(map(len, strings), np.int64, len(strings))))

    def __len__(self) -> int:
        return len(self.ends)

    def take(self, which=slice(None)) -> list[str]:
        """The strings at `which` (a slice, or a list or array of positions); all of them by default."""
        starts = np.concatenate([[0], self.ends[:-1]])[which].tolist()
        return list(map(self.text.__getitem__, map(slice, starts, self.ends[which].tolist())))


@dataclass
class FileTables:
    """One file's playlists, with songs interned per file (codes into `uris`, in first-appearance order)."""

    path: Path
    playlist_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    extra: dict[str, list] = field(default_factory=dict)
    uris: Packed = field(default_factory=Packed)
    names: Packed = field(default_factory=Packed)
    artists: Packed = field(default_factory=Packed)
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # entries per playlist
    entry_song: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # playlists one after another
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, title: str) -> None:
        what = "playlists without a title" if not title else "playlists without tracks"
        self.skipped[what] = self.skipped.get(what, 0) + 1


class _StreamedFile:
    """One file's tables built from json-decoded playlists, one at a time (the streaming path)."""

    def __init__(self, path: Path):
        self.t, self.uris, self.names, self.artists = FileTables(path=path), {}, [], []
        self.lengths, self.entry_song = array("i"), array("i")

    def _add_tracks(self, tracks: list, index: int) -> None:
        uris, get, codes = self.uris, self.uris.get, []
        try:
            for track in tracks:  # a Python loop per track: the whole-file path interns without one
                uri = track["track_uri"]
                code = get(uri)
                if code is None:
                    code = uris[uri] = len(uris)
                    self.names.append(str(track.get("track_name") or ""))
                    self.artists.append(str(track.get("artist_name") or ""))
                codes.append(code)
        except (KeyError, TypeError):
            raise PipelineError(f"{self.t.path}, playlist {index}, track {len(codes)}: no \"track_uri\"; "
                                "every MPD track needs one") from None
        self.lengths.append(len(codes))
        self.entry_song.extend(codes)

    def add_playlist(self, p: dict, index: int) -> None:
        t = self.t
        try:
            pid, tracks = p["pid"], p["tracks"]
        except KeyError as e:
            raise PipelineError(f"{t.path}, playlist {index}: missing key {e}; every MPD playlist has \"pid\" and "
                                "\"tracks\"") from None
        if not isinstance(pid, int | str) or isinstance(pid, bool):
            raise PipelineError(f"{t.path}, playlist {index}: \"pid\" is {json.dumps(pid)[:40]}; MPD pids are numbers")
        pid = str(pid)
        title = _clean(p.get("name"))
        if not title or not isinstance(tracks, list) or not tracks:
            t.skip(title)
            return
        self._add_tracks(tracks, index)
        t.playlist_ids.append(pid)
        t.titles.append(title)
        for col in PLAYLIST_COLUMNS:
            if col in p:
                t.extra.setdefault(col, [None] * (len(t.playlist_ids) - 1))
            if col in t.extra:
                t.extra[col].append(p.get(col))

    def finish(self) -> FileTables:
        t = self.t
        t.uris, t.names, t.artists = Packed.of(list(self.uris)), Packed.of(self.names), Packed.of(self.artists)
        t.lengths, t.entry_song = np.array(self.lengths, dtype=np.int32), np.array(self.entry_song, dtype=np.int32)
        return t


def _read_streaming(path: Path, max_playlists: int) -> FileTables:
    built = _StreamedFile(path)
    with _open_text(path) as f:
        for index, p in _Stream(f, path).playlists():
            if max_playlists and len(built.t.playlist_ids) >= max_playlists:
                break
            built.add_playlist(p, index)
    return built.finish()


def _read_whole(path: Path) -> bytes | None:
    """The file's (uncompressed) bytes, or None when it is larger than WHOLE_FILE_BYTES or unreadable."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read(WHOLE_FILE_BYTES + 1)
        else:
            raw = path.read_bytes() if path.stat().st_size <= WHOLE_FILE_BYTES else b""
    except (OSError, EOFError):
        return None  # the streaming reader says what is wrong with it
    return raw if 0 < len(raw) <= WHOLE_FILE_BYTES else None


def _intern_tracks(t: FileTables, track_lists: list[list[_Track]]) -> None:
    """Per-file song codes in first-appearance order, as the streaming path makes them, without a loop per track."""
    tracks = list(chain.from_iterable(track_lists))
    uris = [track.track_uri for track in tracks]
    first: dict[str, int] = {}
    first_entry = np.fromiter(map(first.setdefault, uris, count()), np.int64, len(uris))  # entry -> its song's first
    firsts = np.fromiter(first.values(), np.int64, len(first))
    code_of_first = np.empty(len(uris), np.int32)
    code_of_first[firsts] = np.arange(len(firsts), dtype=np.int32)
    t.entry_song = code_of_first[first_entry]
    t.lengths = np.fromiter(map(len, track_lists), np.int32, len(track_lists))
    t.uris = Packed.of(list(first))
    songs = [tracks[i] for i in firsts.tolist()]
    t.names = Packed.of([song.track_name or "" for song in songs])
    t.artists = Packed.of([song.artist_name or "" for song in songs])


def _tables_from_slice(path: Path, playlists: list[_Playlist], max_playlists: int) -> FileTables:
    t, kept = FileTables(path=path), []
    for p in playlists:
        if max_playlists and len(kept) >= max_playlists:
            break
        title = _clean(p.name)
        if not title or not p.tracks:
            t.skip(title)
            continue
        kept.append(p)
        t.titles.append(title)
    t.playlist_ids = [str(p.pid) for p in kept]
    for col in PLAYLIST_COLUMNS:
        values = [getattr(p, col) for p in kept]
        if any(v is not msgspec.UNSET for v in values):
            t.extra[col] = [None if v is msgspec.UNSET else v for v in values]
    _intern_tracks(t, [p.tracks for p in kept])
    return t


def read_file(path: Path, max_playlists: int = 0) -> FileTables:
    """Every playlist of one slice (at most `max_playlists` if > 0)."""
    raw = _read_whole(path)
    if raw is not None:
        try:
            playlists = _slice_decoder.decode(raw).playlists
        except UnicodeDecodeError:
            e = _utf8_error(raw)
            raise PipelineError(f"{path}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start:,}); MPD "
                                "slices are UTF-8 JSON: re-save the file as UTF-8") from None
        except msgspec.DecodeError:
            pass  # not the strict schema: the streaming reader names the problem, or takes what is merely unusual
        else:
            return _tables_from_slice(path, playlists, max_playlists)
    return _read_streaming(path, max_playlists)


def _utf8_error(raw: bytes) -> UnicodeDecodeError:
    """Where the bytes stop being UTF-8 (msgspec's error counts from the string it was decoding)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return e
    raise AssertionError("valid UTF-8")


def _clean(text) -> str:
    return " ".join(str(text).split()) if text is not None else ""  # one line per CSV row


@dataclass
class MPDTables:
    """Every file merged: entries as integer codes (playlist code, song code) in playlist order."""

    playlist_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    extra: dict[str, list] = field(default_factory=dict)
    song_uris: dict[str, int] = field(default_factory=dict)
    song_names: list[str] = field(default_factory=list)
    song_artists: list[str] = field(default_factory=list)
    entry_playlist: list[np.ndarray] = field(default_factory=list)
    entry_song: list[np.ndarray] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)  # pid -> file name

    def merge(self, f: FileTables, limit: int) -> None:
        keep = len(f.playlist_ids) if not limit else min(len(f.playlist_ids), limit - len(self.playlist_ids))
        self._check_new_pids(f, f.playlist_ids[:keep])
        for what, n in f.skipped.items():
            self.skipped[what] = self.skipped.get(what, 0) + n
        n_extra = len(self.playlist_ids)
        for col in PLAYLIST_COLUMNS:  # a fixed order: the same columns in the same order on every run
            if col in self.extra or col in f.extra:
                self.extra.setdefault(col, [None] * n_extra).extend(f.extra.get(col, [None] * keep)[:keep])
        lengths = f.lengths[:keep]
        entry_song = f.entry_song[:int(lengths.sum())]
        n_used = int(entry_song.max()) + 1 if len(entry_song) else 0  # songs only in dropped playlists come last
        remap = self._intern(f.uris.take(slice(n_used)), f.names, f.artists)
        self.entry_playlist.append(np.repeat(np.arange(n_extra, n_extra + keep, dtype=np.int32), lengths))
        self.entry_song.append(remap[entry_song])
        self.playlist_ids += f.playlist_ids[:keep]
        self.titles += f.titles[:keep]

    def _check_new_pids(self, f: FileTables, pids: list[str]) -> None:
        if not self.seen.keys().isdisjoint(pids) or len(set(pids)) != len(pids):
            for j, pid in enumerate(pids):  # find the first repeat, as the message needs it
                if pid in self.seen:
                    raise PipelineError(f"{f.path}: pid {pid} (its playlist {j} with a title) was already read from "
                                        f"{self.seen[pid]}; import each slice once")
                self.seen[pid] = f.path.name
        self.seen.update(dict.fromkeys(pids, f.path.name))

    def _intern(self, uris: list[str], names: Packed, artists: Packed) -> np.ndarray:
        """Global codes for one file's songs (int32, by local code); new songs get the next codes in file order."""
        known, n0 = self.song_uris, len(self.song_uris)
        remap = np.fromiter(map(known.setdefault, uris, count(n0)), np.int64, len(uris))  # new: n0 + local index
        new = np.flatnonzero(remap >= n0)
        remap[new] = np.arange(n0, n0 + len(new))
        new = new.tolist()
        known.update(zip([uris[i] for i in new], range(n0, n0 + len(new))))  # codes dense again
        self.song_names += names.take(new)
        self.song_artists += artists.take(new)
        return remap.astype(np.int32)


def _read_files(files: list[Path], max_playlists: int, workers: int):
    if workers <= 1 or len(files) == 1:
        yield from (read_file(f, max_playlists) for f in files)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork: safe next to threads (BLAS, tqdm)
    with ctx.Pool(workers) as pool:
        yield from pool.imap(partial(read_file, max_playlists=max_playlists), files)


def read_mpd(path, max_playlists: int = 0, workers: int = 0) -> MPDTables:
    """Read every playlist under `path` (or the first `max_playlists`) into interned tables.

    Files are parsed by `workers` processes (0: one per CPU, at most 8) and merged in file order."""
    files = mpd_files(path)
    workers = workers or min(8, os.cpu_count() or 1)
    t = MPDTables()
    bar = tqdm(total=len(files), unit=" files", desc="reading MPD", mininterval=2, disable=len(files) == 1)
    for f in _read_files(files, max_playlists, workers):
        t.merge(f, max_playlists)
        bar.update()
        if max_playlists and len(t.playlist_ids) >= max_playlists:
            break
    bar.close()
    if not t.playlist_ids:
        raise PipelineError(f"{path}: no playlists with a title and tracks found")
    for what, n in t.skipped.items():
        log.warning("skipped %s %s", f"{n:,}", what)
    log.info("read %s playlists, %s entries, %s distinct tracks from %s file(s)", f"{len(t.playlist_ids):,}",
             f"{sum(map(len, t.entry_song)):,}", f"{len(t.song_uris):,}", f"{len(files):,}")
    return t


def song_id(uri: str) -> str:
    """`spotify:track:6rqhFgbbKwnb9MLmUQDhG6` -> `6rqhFgbbKwnb9MLmUQDhG6`."""
    return uri.rpartition(":")[2]


def to_frames(t: MPDTables) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(info, songs, song_info) in standard column names; songs' columns are categoricals over the codes."""
    info = pd.DataFrame({"playlist_id": t.playlist_ids, "title": t.titles})
    for col, values in t.extra.items():
        info[col] = [_clean(v) if isinstance(v, str) else v for v in values]
    ids = list(map(song_id, t.song_uris))  # dict order = code order
    if len(set(ids)) != len(ids):
        ids = list(t.song_uris)  # ids clash once the URI prefix is cut: keep the whole URI
    song_info = pd.DataFrame({"song_id": ids, "name": [" ".join(n.split()) for n in t.song_names],  # all str
                              "artist": [" ".join(a.split()) for a in t.song_artists]})
    songs = pd.DataFrame({
        "playlist_id": pd.Categorical.from_codes(np.concatenate(t.entry_playlist), t.playlist_ids),
        "song_id": pd.Categorical.from_codes(np.concatenate(t.entry_song), ids),
    })
    return info, songs, song_info
