"""Generate a playlist from a title with the trained model (by default fused with title kNN: --recommend.method).

`--title "深夜emo"` prints one playlist; without it, titles are read line by line from stdin when it is not a
terminal, else an interactive prompt asks for them (exit, quit, Ctrl-D or Ctrl-C to leave). The recommender
scores clusters for the title; one song is drawn from each of the best --num_songs clusters (--pick random |
popular | weighted), so a new --seed, or asking again, gives another playlist of the same clusters. Each song
is printed as `name - artist (cluster a-b, N songs)`; --explain adds a few other songs of its cluster.
--extra_text adds what the model was trained to read after the title (NetEase tags: `--extra_text "华语 流行"`).
"""

import logging
import sys
import threading

from playlist_gen.cli import parse_overrides, run_script

log = logging.getLogger(__name__)

PROMPT = "输入歌单标题 / playlist title: "
EXIT_WORDS = {"exit", "quit", "q", "退出"}


def check_options(cfg) -> None:
    """Fail before any loading (and before the prompt) on a missing model or a stale or half-written stage: the
    manifests' chain and stamps (size, mtime) of what is read, so no large file is hashed on the way to the first
    playlist. Option values were checked with the config."""
    from playlist_gen import manifest
    from playlist_gen.generation import require_model

    reads = manifest.Reads(cfg, thorough=False)
    if cfg.recommend.method in ("model", "fusion"):
        require_model(cfg)
        reads.require("model", [cfg.final_model_dir])
    reads.require("corpus", [cfg.split_path("train"), cfg.corpus_meta_path])
    reads.require("semantic_ids", [cfg.semantic_ids_path])
    reads.require("data", [cfg.playlist_info_path, cfg.playlist_song_path, cfg.song_info_path])


class Background:
    """Run `fn` in a thread (imports and model loading while the first title is typed); get() waits."""

    def __init__(self, fn):
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as e:  # re-raised in the caller's thread by get()
            self.error = e

    def get(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


class PlaylistMaker:
    """The catalogue and the recommender, loaded once; one call per title."""

    def __init__(self, cfg):
        from playlist_gen.catalogue import load_catalogue
        from playlist_gen.device import resolve_device
        from playlist_gen.io import read_json
        from playlist_gen.recommend import load_recommenders

        check_options(cfg)
        self.cfg, self.requests = cfg, 0
        self.catalogue = load_catalogue(cfg)
        self.normalize = read_json(cfg.corpus_meta_path, "run `python prepare_corpus.py` first").get("normalize", True)
        device = resolve_device("auto", 0, cfg.generate.cpu_threads)
        method = cfg.recommend.method
        self.recommender = load_recommenders(cfg, [method], device, cfg.generate.pick, self.catalogue)[method]

    def text(self, title: str) -> str:
        """The input text as the corpus builds it: normalised title, then the extra text."""
        from playlist_gen.text import input_text

        return input_text(title, [self.cfg.generate.extra_text], self.normalize)

    def playlist(self, title: str) -> list[tuple[str, tuple | None]]:
        """(song_id, cluster) per song; a new seed per request, so asking again varies a random pick."""
        import numpy as np

        from playlist_gen.catalogue import pick_songs
        from playlist_gen.recommend import Request

        g, seed = self.cfg.generate, self.cfg.seed + self.requests
        self.requests += 1
        k = max(100, 5 * g.num_songs)  # enough ranked songs for song-ranking methods to span num_songs clusters
        rec = self.recommender.recommend([Request(self.text(title), k, g.num_songs, seed)])[0]
        picked = pick_songs(rec.clusters, self.catalogue.index, g.pick, np.random.default_rng(seed))[:g.num_songs]
        used = {s for s, _ in picked}
        picked += [(s, self.catalogue.index.song_cluster.get(s)) for s in rec.songs if s not in used]
        return picked[:g.num_songs]

    def format(self, title: str, songs: list[tuple[str, tuple | None]]) -> str:
        g, index = self.cfg.generate, self.catalogue.index
        shown = title if len(title) <= 80 else title[:77] + "..."
        lines = [f"🎵 {shown}  ({len(songs)} songs; {self.cfg.recommend.method}, {g.mode}, pick={g.pick})"]
        for j, (song, cluster) in enumerate(songs, 1):
            name, artist = index.name(song)
            if cluster is None:
                where = "no cluster: from similar playlists"
            else:
                n = len(index.cluster_songs[cluster])
                where = f"cluster {'-'.join(map(str, cluster))}: {f'1 of {n} songs' if n > 1 else 'its only song'}"
            lines.append(f"{j:>3}. {name} - {artist} ({where})")
            if g.explain and cluster is not None:
                others = [index.name(s) for s in index.cluster_songs[cluster] if s != song][:3]
                also = "; ".join(f"{n} - {a}" for n, a in others) or "no other songs"
                lines.append(f"       also in its cluster: {also}")
        if len(songs) < g.num_songs:
            lines.append(f"(only {len(songs)} of the {g.num_songs} songs asked for: the catalogue has no more)")
        return "\n".join(lines)

    def show(self, title: str) -> None:
        title = title.strip()
        print(self.format(title, self.playlist(title)), flush=True)


def repl(maker: Background) -> None:
    """Ask for titles until exit/quit, Ctrl-D or Ctrl-C; an empty line asks again."""
    while True:
        try:
            title = input(PROMPT).strip()
            if title.lower() in EXIT_WORDS:
                return
            if title:
                maker.get().show(title)
        except (EOFError, KeyboardInterrupt):
            print()
            return


SECTIONS = ("generate", "recommend")  # the config sections --help lists first


def main(argv=None):
    from playlist_gen.io import PipelineError

    cfg, given = parse_overrides(argv, __doc__, SECTIONS)
    if "generate.title" in given and not cfg.generate.title.strip():
        raise PipelineError("--title is blank: give a title, or leave --title out to type titles at a prompt")
    if cfg.generate.title.strip():
        PlaylistMaker(cfg).show(cfg.generate.title)
    elif not sys.stdin.isatty():
        maker = None
        for line in sys.stdin:
            if line.strip():
                maker = maker or PlaylistMaker(cfg)
                maker.show(line)
                print()
        if maker is None:
            raise PipelineError("no title on stdin (only blank lines): pipe one title per line, or use --title")
    else:
        check_options(cfg)
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.WARNING)  # no INFO lines of the loading thread onto the prompt
        try:
            repl(Background(lambda: PlaylistMaker(cfg)))
        finally:
            root.setLevel(level)


if __name__ == "__main__":
    run_script(main)
