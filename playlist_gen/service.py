"""The playlist service: the loaded recommender, the catalogue and the listening sessions behind one object that
returns typed records and prints nothing. The HTTP API (playlist_gen.http_api) is a thin front end over it; the
CLI prompt runs the same Session and PlaylistMaker (playlist_gen.session), so both give the same playlists.

Every playlist served and every like, skip, `more` and `new` goes to the feedback log (playlist_gen.feedback_log)
before the call returns.
"""

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from config import SHOWN

from .feedback_log import FeedbackLog
from .session import Feedback, PlaylistMaker, Session, SongMatcher

MAX_TITLE = 500  # characters
MAX_SONGS = 200
MAX_SESSIONS = 10_000  # playlists kept for feedback; the oldest go first
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class ServiceError(ValueError):
    """A request the service cannot serve, with one sentence for the client; `status` 400 or 404."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Song:
    position: int  # 1-based, in the playlist
    id: str
    name: str
    artist: str
    cluster: str | None  # "12-7", or None for a song without a semantic ID
    score: float | None  # the recommender's score for this request
    reason: str  # why it is there


@dataclass
class Playlist:
    id: str
    title: str
    songs: list[Song]
    seed_songs: list[str]  # liked songs that seeded this request
    note: str = ""


def check_title(title: str) -> str:
    title = (title or "").strip()
    if not title:
        raise ServiceError("the title is empty: give a playlist title or a mood")
    if len(title) > MAX_TITLE:
        raise ServiceError(f"the title has {len(title):,} characters: give at most {MAX_TITLE}")
    if _CONTROL.search(title):
        raise ServiceError("the title holds control characters: give plain text")
    return title


def served_versions(cfg) -> dict:
    """The manifest ids of what serves a playlist: every feedback row records them."""
    from .manifest import Reads

    reads = Reads(cfg, thorough=False)
    versions = {product: reads.manifest(product)["id"] for product in ("data", "semantic_ids", "corpus")}
    if cfg.recommend.method in ("model", "fusion"):
        versions["model"] = "+".join([reads.manifest("model")["id"], *ensemble_digests(cfg)])
    return versions


def ensemble_digests(cfg) -> list[str]:
    """Per model of --recommend.ensemble, the first 16 hex digits of its weights' sha256: with an ensemble, the
    model version is the main model's manifest id + these, so feedback says which models served it."""
    from .generation import member_folder
    from .manifest import sha256_file

    return [sha256_file(member_folder(cfg, path) / "model.safetensors")[:16]
            for path in filter(None, (p.strip() for p in cfg.recommend.ensemble.split(",")))]


class PlaylistService:
    """One loaded recommender for every listener; `lock` serialises its use (requests run in worker threads)."""

    def __init__(self, cfg, log: FeedbackLog | None = None):
        self.versions = served_versions(cfg)
        self.cfg, self.log = cfg, log
        self.maker = PlaylistMaker(cfg)
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.lock = threading.Lock()
        self._matcher = None

    def create(self, title: str, seed_songs=(), num_songs: int | None = None, pick: str | None = None) -> Playlist:
        title = check_title(title)
        g = self.cfg.generate
        if num_songs is not None and not 1 <= num_songs <= MAX_SONGS:
            raise ServiceError(f"num_songs={num_songs}: ask for 1 to {MAX_SONGS} songs")
        if pick is not None and pick not in SHOWN:
            raise ServiceError(f"pick={pick!r}: use one of {', '.join(SHOWN)}")
        with self.lock:
            seeds = [self.song_id(s) for s in seed_songs]
            session = Session(self.maker, record=self._record)  # it logs what it shows and is told
            session.liked = list(dict.fromkeys(seeds))
            session.num_songs, session.pick = num_songs or g.num_songs, pick or g.pick
            playlist = self._serve(session, title, more=False)
            self.sessions[playlist.id] = session
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
            return playlist

    def feedback(self, playlist_id: str, like=(), skip=(), action: str | None = None) -> Playlist | None:
        """Likes and skips (positions), then `more` (the next songs: returned) or `new` (likes forgotten)."""
        with self.lock:
            session = self.sessions.get(playlist_id)
            if session is None:
                raise ServiceError(f"no playlist {playlist_id!r} (unknown, or forgotten after "
                                   f"{MAX_SESSIONS:,} newer ones): make a new one", 404)
            if action not in (None, "more", "new"):
                raise ServiceError(f"action={action!r}: use more or new")
            fb = Feedback(list(like), list(skip))
            problem = session.problem(fb)
            if problem:
                raise ServiceError(problem)
            if fb.like or fb.skip:
                session.feedback(fb)
            if action == "new":
                session.forget_likes()
            return self._serve(session, session.title, more=True) if action == "more" else None

    def search(self, query: str, limit: int = 10) -> list[Song]:
        """Catalogue songs whose `name - artist` is closest to `query` (for seed songs)."""
        query = (query or "").strip()
        if not query or len(query) > MAX_TITLE:
            raise ServiceError(f"q: give 1 to {MAX_TITLE} characters of a song name or artist")
        with self.lock:
            return [self.song(0, song, score, "") for song, score in self.matcher().ranked(query, limit) if score > 0]

    def health(self) -> dict:
        return {"status": "ok", "method": self.cfg.recommend.method, "versions": self.versions,
                "songs": len(self.maker.catalogue.songs), "playlists_open": len(self.sessions)}

    # ---- helpers (called under self.lock) ----
    def matcher(self) -> SongMatcher:
        if self._matcher is None:
            self._matcher = SongMatcher(self.maker.catalogue)
        return self._matcher

    def song_id(self, text: str) -> str:
        song, score = self.matcher().match(str(text))
        if song is None:
            raise ServiceError(f"seed song {str(text)[:80]!r} matches no song of the catalogue (best similarity "
                               f"{score:.2f}): search with GET /songs?q=")
        return song

    def song(self, position: int, song_id: str, score: float | None, reason: str) -> Song:
        index = self.maker.catalogue.index
        name, artist = index.name(song_id)
        cluster = index.song_cluster.get(song_id)
        return Song(position, song_id, name, artist, "-".join(map(str, cluster)) if cluster else None, score, reason)

    def _serve(self, session: Session, title: str, more: bool) -> Playlist:
        start, songs = session.songs(title, more)
        scores = self.maker.scores
        reasons = self.maker.reasons(title, songs, session.liked) if self.cfg.recommend.method != "random_cluster" \
            else {}
        out = [self.song(start + j, s, scores.get(s), reasons.get(s, "a random cluster"))
               for j, (s, _) in enumerate(songs)]
        return Playlist(session.playlist_id, title, out, list(session.liked), self.maker.note)

    def _record(self, events) -> None:
        """Sessions' events into the log, when the service has one (set after loading: serve)."""
        if self.log is not None:
            self.log.record(events)
