"""generate_playlist.py's listening session: seed songs by id or name, likes and skips that shape the next playlist,
and why each song is there.

Feedback after a playlist (the prompt and --help say so, in Chinese and English):
  +3 +7   like songs 3 and 7: liked songs become seed songs of the next request (never shown again)
  -5      skip song 5: it never comes back while the session runs, and its cluster is ranked lower
  more    the next songs of the same playlist
  new     forget the likes and the lowered clusters (skipped songs stay out)
Anything else is a new title.
"""

import logging
import re
from dataclasses import dataclass, field, replace
from functools import cached_property

from config import PICKS

from .text import invalid_utf8, printable

log = logging.getLogger(__name__)

FEEDBACK_HELP = ("反馈 / feedback: +3 +7 喜欢第3、7首 (like: they seed the next playlist) · -5 跳过第5首 (skip: never "
                 "again, its cluster ranked lower) · more 更多 (next songs) · new 重新开始 (forget likes) · exit 退出")
_FEEDBACK = re.compile(r"^\s*(?:[+-]\d+[\s,]*)+$")
MIN_SHARED = 2  # --explain: a song in this many training playlists with a seed song is there because of it
MATCH_THRESHOLD = 0.5  # cosine of char n-grams: below it a typed name matches no song


@dataclass
class Feedback:
    like: list[int] = field(default_factory=list)  # 1-based positions in the shown list
    skip: list[int] = field(default_factory=list)


def parse_feedback(line: str) -> Feedback | None:
    """`+3 +7 -5` -> Feedback; anything else (a title, a command) -> None."""
    if not _FEEDBACK.match(line):
        return None
    out = Feedback()
    for sign, n in re.findall(r"([+-])(\d+)", line):
        (out.like if sign == "+" else out.skip).append(int(n))
    return out


class SongMatcher:
    """Song ids, or `name - artist` text matched to the catalogue by char n-gram TF-IDF (typos and case forgiven).
    The n-gram index is built at the first name to match (a song id needs none)."""

    def __init__(self, catalogue):
        self.catalogue = catalogue

    @cached_property
    def index(self):
        """(song ids, their CharTfidf, its (n-grams, songs) matrix)."""
        from .tfidf import CharTfidf

        ids = [s for s in self.catalogue.songs if s in self.catalogue.index.names]
        texts = [" - ".join(self.catalogue.index.names[s]) for s in ids]
        tfidf = CharTfidf((2, 3)).fit(texts)
        return ids, tfidf, tfidf.transform(texts).T.tocsr()

    def ranked(self, query: str, limit: int) -> list[tuple[str, float]]:
        """The `limit` songs whose `name - artist` is closest to `query`, with their similarity, best first."""
        from .catalogue import top_indices

        ids, tfidf, X = self.index
        sims = (tfidf.transform([query]) @ X).toarray()[0]
        return [(ids[i], float(sims[i])) for i in top_indices(sims, limit)]

    def match(self, query: str) -> tuple[str | None, float]:
        """(song id, similarity) of the best match, or (None, best similarity) when none is close enough."""
        query = query.strip()
        if query in self.catalogue.code:
            return query, 1.0
        song, score = next(iter(self.ranked(query, 1)), (None, 0.0))
        return (song, score) if score >= MATCH_THRESHOLD else (None, score)


def split_seed_songs(text: str) -> list[str]:
    """`a; b` or `a, b` (names may hold commas: use ; between them then)."""
    parts = text.split(";") if ";" in text else text.split(",")
    return [p.strip() for p in parts if p.strip()]


class Session:
    """The state between playlists: the title, what was shown, likes, skips and lowered clusters."""

    def __init__(self, maker, record=None):
        self.maker, self.record = maker, record  # record: a FeedbackLog's record (every playlist, like, skip...)
        self.playlist_id: str | None = None
        self.liked: list[str] = []
        self.skipped: set[str] = set()
        self.demoted: set[tuple] = set()
        self.title: str | None = None
        self.shown: list[tuple[str, tuple | None]] = []
        self.num_songs: int | None = None  # per listener (the service's requests); None: --num_songs
        self.pick: str | None = None  # None: --pick

    def handle(self, line: str) -> str:
        """One line typed at the prompt -> what to print."""
        line = line.strip()
        bad = invalid_utf8(line)
        if bad:
            return f"not valid UTF-8 ({bad}): type it again"
        feedback = parse_feedback(line)
        if feedback is not None:
            return self.feedback(feedback)
        if line.lower() in ("more", "更多"):
            if self.title is None:
                return "no playlist yet: type a title first"
            return self.playlist(self.title, more=True)
        if line.lower() in ("new", "重新开始"):
            self.forget_likes()
            return "likes and lowered clusters forgotten (skipped songs stay out); type a title"
        if line.lower() in ("help", "?", "帮助"):
            return FEEDBACK_HELP
        if re.match(r"^\s*(\+|-[\d\s,+-]*$)", line):  # `+abc`, `+1,2`, `-1,2`: feedback gone wrong, not a title
            return f"{printable(line)!r} is not feedback: like or skip by number (+3 -5); {FEEDBACK_HELP}"
        return self.playlist(line)

    def songs(self, title: str, more: bool = False) -> tuple[int, list[tuple[str, tuple | None]]]:
        """The next songs for `title` (a new playlist, or with `more` the next songs of this one) and the position of
        the first: never a song shown in this playlist, skipped, or liked (liked songs seed the request)."""
        if more:
            self.log([("more", None, None)])
        else:
            import uuid

            self.title, self.shown, self.playlist_id = title, [], uuid.uuid4().hex[:12]
        exclude = self.skipped | {s for s, _ in self.shown}
        songs = self.maker.playlist(title, tuple(self.liked), frozenset(exclude), frozenset(self.demoted),
                                    self.num_songs, self.pick)
        start = len(self.shown) + 1
        self.shown += songs
        self.log([("shown", s, start + j) for j, (s, _) in enumerate(songs)])
        return start, songs

    def log(self, actions) -> None:
        """(action, song, position) of this playlist into the feedback log, when there is one."""
        if self.record is not None and actions:
            from .feedback_log import Event

            self.record([Event(self.playlist_id, self.title, *a) for a in actions])

    def playlist(self, title: str, more: bool = False) -> str:
        start, songs = self.songs(title, more)
        return self.maker.format(title, songs, start=start, seeds=self.liked)

    def forget_likes(self) -> None:
        """`new`: likes and lowered clusters go; skipped songs stay out."""
        if self.title is not None:
            self.log([("new", None, None)])
        self.liked, self.demoted = [], set()

    def problem(self, fb: Feedback) -> str | None:
        """Why the feedback cannot apply (a position not shown), or None."""
        bad = [n for n in fb.like + fb.skip if not 1 <= n <= len(self.shown)]
        if not bad:
            return None
        return f"no song {bad[0]} here: the playlist shows songs 1-{len(self.shown)}" if self.shown else \
            "no playlist yet: type a title first"

    def feedback(self, fb: Feedback) -> str:
        problem = self.problem(fb)
        if problem:
            return problem
        self.log([(kind, self.shown[n - 1][0], n) for kind, ns in (("like", fb.like), ("skip", fb.skip)) for n in ns])
        said = []
        for n in fb.like:
            song = self.shown[n - 1][0]
            if song not in self.liked:
                self.liked.append(song)
            said.append(f"liked {n}. {self.maker.song_name(song)}")
        for n in fb.skip:
            song, cluster = self.shown[n - 1]
            self.skipped.add(song)
            if song in self.liked:
                self.liked.remove(song)
            if cluster is not None:
                self.demoted.add(cluster)
            said.append(f"skipped {n}. {self.maker.song_name(song)}")
        return "; ".join(said) + " — `more` for more songs, a title for a new playlist, `new` to forget likes"


class PlaylistMaker:
    """The catalogue and the recommender, loaded once; one call per playlist."""

    def __init__(self, cfg):
        from .catalogue import load_catalogue
        from .device import resolve_device
        from .factory import load_recommenders
        from .io import read_json

        self.cfg, self.requests, self.scores = cfg, 0, {}
        self.catalogue = load_catalogue(cfg)
        self.catalogue.warm()  # the song matrices for seed songs, beside the rest of the loading
        self.normalize = read_json(cfg.corpus_meta_path, "run `python prepare_corpus.py` first").get("normalize", True)
        device = resolve_device("auto", 0, cfg.generate.cpu_threads)
        method = cfg.recommend.method
        pick = cfg.generate.pick if cfg.generate.pick in PICKS else cfg.eval.song_pick  # beam/sample: cluster -> song
        self.recommender = load_recommenders(cfg, [method], device, pick, self.catalogue)[method]
        self.seeds, self.matched = self.seed_songs(cfg.generate.seed_songs)
        self.note = self.extra_text_note()

    def extra_text_note(self) -> str:
        """A line when the training titles carried extra columns (NetEase tags) and the user gives none."""
        import numpy as np

        from .text import EXTRA_SEPARATOR

        distinct, rows = self.catalogue.text_table
        per_text = np.bincount(rows, minlength=len(distinct))
        tagged = sum(int(n) for t, n in zip(distinct, per_text) if EXTRA_SEPARATOR in t)
        if self.cfg.generate.extra_text.strip() or tagged * 4 < len(rows):  # a quarter of them or more
            return ""
        return ("note: the model was trained on titles with tags; these playlists follow the title alone (give tags "
                "with --extra_text)")

    def seed_songs(self, text: str) -> tuple[list[str], str]:
        """--seed_songs resolved to catalogue songs, and a line per given song saying what it matched."""
        if not text.strip():
            return [], ""
        matcher, songs, lines = SongMatcher(self.catalogue), [], []
        for query in split_seed_songs(text):
            song, score = matcher.match(query)
            if song is None:
                lines.append(f"seed {query!r}: no song matched (best similarity {score:.2f}); left out")
            else:
                songs.append(song)
                lines.append(f"seed {query!r} -> {self.song_name(song)}")
        if not songs:
            lines.append("none of the seed songs matched the catalogue: the playlist follows the title alone")
        return list(dict.fromkeys(songs)), "\n".join(lines)

    def text(self, title: str) -> str:
        """The input text as the corpus builds it: normalised title, then the extra text."""
        from .text import input_text

        return input_text(title, [self.cfg.generate.extra_text], self.normalize)

    def song_name(self, song: str) -> str:
        return printable(" - ".join(self.catalogue.index.name(song)))

    def playlist(self, title: str, seeds=(), exclude=frozenset(), demote=frozenset(), num_songs: int | None = None,
                 pick: str | None = None) -> list[tuple[str, tuple | None]]:
        """(song_id, cluster) per song: the recommendation's songs as `pick` (default --pick) shows them
        (playlist_gen.shown, the same code evaluate_tiger.py scores). A new seed per request, so asking again varies a
        sampled or random pick."""
        import numpy as np

        from .recommend import Request
        from .shown import ShowPolicy, candidates, show

        g, seed = self.cfg.generate, self.cfg.seed + self.requests
        policy = replace(ShowPolicy.from_config(g, pick), n=num_songs or g.num_songs)
        self.requests += 1
        seeds = tuple(dict.fromkeys([*self.seeds, *seeds]))
        k = candidates(policy.n) + len(exclude)
        request = Request(self.text(title), k, policy.n, seed, seeds, frozenset(exclude), frozenset(demote))
        rec = self.recommender.recommend([request])[0]
        self.scores = dict(zip(rec.songs, rec.song_scores))  # the last request's song scores (the service shows them)
        return show(rec, self.catalogue, policy, np.random.default_rng(seed), frozenset(exclude) | frozenset(seeds))

    def format(self, title: str, songs: list[tuple[str, tuple | None]], start: int = 1, seeds=()) -> str:
        g, index = self.cfg.generate, self.catalogue.index
        shown = printable(title if len(title) <= 80 else title[:77] + "...")
        lines = [f"🎵 {shown}  ({len(songs)} songs; {self.cfg.recommend.method}, {g.mode}, pick={g.pick})"]
        reasons = self.reasons(title, songs, [*self.seeds, *seeds]) if g.explain else {}
        for j, (song, cluster) in enumerate(songs, start):
            name, artist = map(printable, index.name(song))
            if cluster is None:
                where = "no cluster: from similar playlists"
            else:
                n = len(index.cluster_songs[cluster])
                where = f"cluster {'-'.join(map(str, cluster))}: {f'1 of {n} songs' if n > 1 else 'its only song'}"
            lines.append(f"{j:>3}. {name} - {artist} ({where})")
            if g.explain:
                lines.append(f"       why: {reasons[song]}")
                if cluster is not None:
                    others = [map(printable, index.name(s)) for s in index.cluster_songs[cluster] if s != song][:3]
                    also = "; ".join(f"{n} - {a}" for n, a in others) or "no other songs"
                    lines.append(f"       also in its cluster: {also}")
        if len(songs) < g.num_songs:
            lines.append(f"(only {len(songs)} of the {g.num_songs} songs asked for: the catalogue has no more)")
        return "\n".join(lines)

    def shared_playlists(self, songs: list[str], seeds: list[str]) -> dict[tuple[str, str], int]:
        """(song, seed) -> how many training playlists hold both: the songs' and the seeds' rows of the catalogue's
        song -> playlists matrix, multiplied. A column-major copy of the song matrix of its own and a product per pair
        had taken 8-9 s at the first seed songs and ~1 s after at 1M playlists; cutting columns, 0.6 s."""
        if not songs or not seeds:
            return {}
        code = self.catalogue.code
        songs, seeds = list(dict.fromkeys(songs)), list(dict.fromkeys(seeds))
        by_song = self.catalogue.by_song
        counts = (by_song[[code[s] for s in songs]] @ by_song[[code[s] for s in seeds]].T).toarray()
        return {(a, b): int(counts[i, j]) for i, a in enumerate(songs) for j, b in enumerate(seeds)}

    def reasons(self, title: str, songs, seeds) -> dict[str, str]:
        """Per song, what led to it: a liked (seed) song of the same cluster, else a seed song it shares at least
        MIN_SHARED training playlists with, else the title word whose removal lowers its cluster's score most
        (occlusion, under the model when the recommender is fused), else the similar playlists it came from."""
        import numpy as np

        from .recommend import Request

        index, code = self.catalogue.index, self.catalogue.code
        seed_of = {index.song_cluster[s]: s for s in seeds if s in index.song_cluster}
        known = [s for s in seeds if s in code]
        together = self.shared_playlists([song for song, _ in songs if song in code], known)
        words = re.findall(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]|[^\s\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]+",
                           title)
        variants = [title] + [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))] if len(words) > 1 \
            else [title]
        from .recommend import Fusion

        # occlusion under the model alone when fused: through the kNN experts it would embed every variant with e5
        # (4x the time of the playlist itself)
        scorer = self.recommender.model if isinstance(self.recommender, Fusion) else self.recommender
        # a one-word title has no variant to compare: its reasons need no scores (at 1M playlists a model pass over
        # 800k clusters, ~0.25 s)
        scores = scorer.cluster_scores([Request(self.text(t)) for t in variants]) if len(variants) > 1 else None
        number = self.catalogue.cluster_number
        out = {}
        for song, cluster in songs:
            shared, seed = max(((together.get((song, x), 0), x) for x in known), default=(0, None),
                               key=lambda t: t[0])
            if cluster in seed_of:
                out[song] = f"the same cluster as your song {self.song_name(seed_of[cluster])}"
            elif shared >= MIN_SHARED:
                out[song] = f"in {int(shared)} training playlists with your song {self.song_name(seed)}"
            elif cluster is None:
                out[song] = "from playlists with titles like this one"
            elif len(variants) > 1:
                c = number[cluster]
                drops = np.log(scores[0, c] + 1e-12) - np.log(scores[1:, c] + 1e-12)
                best = int(drops.argmax())
                out[song] = f"the title word {words[best]!r}" if drops[best] > 0 else "the title as a whole"
            else:
                out[song] = f"the title {title!r}"
        return out
