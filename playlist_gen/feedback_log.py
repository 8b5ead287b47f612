"""The listeners' log: every playlist served and every like, skip, `more` and `new`, in SQLite (WAL mode) in
output_dir, each row with the time and the model and semantic-ID versions that served it.

One writer at a time (a lock), one transaction per call, committed (synchronous=FULL) before the call returns: what
the service acknowledged is on disk, `kill -9` or not. Rows of another model or ID version stay readable: they say
which version served them.
"""

import sqlite3
import threading
import time
from dataclasses import dataclass

SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,          -- seconds since the epoch
    source TEXT NOT NULL,        -- http | cli
    playlist_id TEXT NOT NULL,
    title TEXT NOT NULL,
    action TEXT NOT NULL,        -- shown | like | skip | more | new
    song_id TEXT,                -- shown, like, skip: the song
    position INTEGER,            -- its 1-based position in the playlist
    model TEXT NOT NULL,         -- manifest id of the model that served it
    semantic_ids TEXT NOT NULL   -- manifest id of the semantic IDs
)"""


@dataclass(frozen=True)
class Event:
    playlist_id: str
    title: str
    action: str
    song_id: str | None = None
    position: int | None = None


class FeedbackLog:
    def __init__(self, path, versions: dict, source: str = "http"):
        self.versions, self.source, self.lock = versions, source, threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(SCHEMA)

    def record(self, events: list[Event]) -> None:
        """All of `events` in one transaction, on disk when this returns."""
        now = time.time()
        rows = [(now, self.source, e.playlist_id, e.title, e.action, e.song_id, e.position,
                 self.versions.get("model", ""), self.versions.get("semantic_ids", "")) for e in events]
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("INSERT INTO events (time, source, playlist_id, title, action, song_id, "
                                    "position, model, semantic_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.db.close()


def read_events(path) -> list[dict]:
    """Every row of a log, oldest first (any version's)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM events ORDER BY id")]
    finally:
        db.close()


@dataclass(frozen=True)
class Listened:
    """A served playlist as its listener left it: the songs liked (in the order liked) and the songs skipped; a song
    liked then skipped counts as skipped, skipped then liked as liked."""

    playlist_id: str
    title: str
    liked: list
    skipped: list


def liked_playlists(path) -> list[Listened]:
    """Per served playlist with a like that was not skipped afterwards, oldest first: its likes and skips."""
    from .io import PipelineError

    try:
        events = read_events(path)
    except sqlite3.Error as e:
        raise PipelineError(f"{path}: not a feedback log ({e}); give the feedback.db of generate_playlist.py "
                            "--serve or its prompt") from None
    titles, verdicts = {}, {}
    for e in events:
        titles.setdefault(e["playlist_id"], e["title"])
        songs = verdicts.setdefault(e["playlist_id"], {})
        if e["action"] in ("like", "skip") and e["song_id"] and songs.get(e["song_id"]) != e["action"]:
            songs.pop(e["song_id"], None)  # the latest verdict counts, in the order it was first given
            songs[e["song_id"]] = e["action"]
    out = []
    for pid, songs in verdicts.items():
        liked = [s for s, v in songs.items() if v == "like"]
        if liked:
            out.append(Listened(pid, titles[pid], liked, [s for s, v in songs.items() if v == "skip"]))
    return out
