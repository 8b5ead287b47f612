"""Generate a playlist from a title with the trained model.

`--title "深夜emo"` prints one playlist; without it, titles are read line by line from stdin when it
is not a terminal, else an interactive prompt asks for them (exit, quit, Ctrl-D or Ctrl-C to leave).
Each song is printed as `name - artist (from a cluster of N similar songs)`; --explain adds its
cluster ID and a few other songs of the cluster. --num_songs, --mode (beam | sample), --pick
(random | popular | weighted) and --seed set the generation; with pick=random or mode=sample a new
seed gives a new playlist for the same title.
"""

import logging
import sys
import threading

from playlist_gen.cli import parse_config, run_script

log = logging.getLogger(__name__)

PROMPT = "输入歌单标题 / playlist title: "
EXIT_WORDS = {"exit", "quit", "q", "退出"}


def check_options(cfg) -> None:
    """Fail before any loading (and before the prompt) on a bad option or a missing model."""
    from playlist_gen.generation import MODES, PICKS, require_model
    from playlist_gen.io import PipelineError

    g = cfg.generate
    if g.mode not in MODES or g.pick not in PICKS or g.num_songs < 1:
        raise PipelineError(f"--mode must be one of {MODES}, --pick one of {PICKS}, --num_songs at least 1 "
                            f"(got {g.mode!r}, {g.pick!r}, {g.num_songs})")
    require_model(cfg)


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
    """The song index and the model, loaded once; one call per title."""

    def __init__(self, cfg):
        from playlist_gen.generation import load_generator, load_song_index, pick_device

        check_options(cfg)
        self.cfg, self.requests = cfg, 0
        self.index = load_song_index(cfg)
        self.generator = load_generator(cfg, self.index.cluster_songs, pick_device(0, cfg.generate.cpu_threads))
        if self.generator.meta.get("extra_columns"):
            log.warning("the model was trained on titles plus %r; only the title is given here",
                        self.generator.meta["extra_columns"])

    def playlist(self, title: str) -> list[tuple[str, tuple]]:
        """(song_id, cluster) per song; a new seed per request, so asking again varies a random playlist."""
        import numpy as np

        from playlist_gen.generation import pick_songs
        from playlist_gen.text import clean_text

        seed = self.cfg.seed + self.requests
        self.requests += 1
        tuples = self.generator.generate([clean_text(title)], self.cfg.generate, seed=seed)[0]
        return pick_songs(tuples, self.index, self.cfg.generate.pick, np.random.default_rng(seed))

    def format(self, title: str, songs: list[tuple[str, tuple]]) -> str:
        g, index = self.cfg.generate, self.index
        lines = [f"🎵 {title}  ({len(songs)} songs; {g.mode}, pick={g.pick})"]
        for j, (song, cluster) in enumerate(songs, 1):
            name, artist = index.name(song)
            members = index.cluster_songs[cluster]
            n = len(members)
            lines.append(f"{j:>3}. {name} - {artist} (from a cluster of {n} similar song{'s' * (n != 1)})")
            if g.explain:
                others = [index.name(s) for s in members if s != song][:3]
                also = "; ".join(f"{n} - {a}" for n, a in others) or "no other songs"
                lines.append(f"       cluster {'-'.join(map(str, cluster))}; also in it: {also}")
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


def main(argv=None):
    cfg = parse_config(argv, __doc__)
    if cfg.generate.title.strip():
        PlaylistMaker(cfg).show(cfg.generate.title)
    elif not sys.stdin.isatty():
        maker = None
        for line in sys.stdin:
            if line.strip():
                maker = maker or PlaylistMaker(cfg)
                maker.show(line)
                print()
    else:
        check_options(cfg)
        repl(Background(lambda: PlaylistMaker(cfg)))


if __name__ == "__main__":
    run_script(main)
