"""Generate a playlist from a title with the trained model (by default fused with title kNN: --recommend.method).

`--title "深夜emo"` prints one playlist; without it, titles are read line by line from stdin when it is not a
terminal, else an interactive prompt asks for them (exit, quit, Ctrl-D or Ctrl-C to leave). The recommender
ranks songs for the title; --pick chooses the --num_songs shown (playlist_gen.shown; evaluate_tiger.py scores the
same playlist): sample (default: drawn by score at --sample_temperature, at most --max_per_artist per artist,
another playlist each time), diverse (the top songs with that artist cap), ranked, cluster, or random | popular |
weighted (one song of each of the best clusters: most surprise, least accuracy). Each song is printed as
`name - artist (cluster a-b: 1 of N songs)`; --explain says why it is there (a liked song of its cluster, the title
word that led to it) and shows a few other songs of its cluster.
--seed_songs "id; name - artist; ..." starts the playlist from songs you like (ids, or names matched to the
catalogue; each match is printed). --extra_text adds what the model was trained to read after the title
(NetEase tags: `--extra_text "华语 流行"`).

`--serve [--host 127.0.0.1] [--port 8000]` serves the same playlists over HTTP instead: a web page at `/`, the API
(POST /playlists, POST /playlists/{id}/feedback, GET /songs?q=, GET /health) documented at /docs; every playlist
served and every like and skip is kept in output_dir/feedback.db.

At the prompt, after a playlist / 歌单之后 (--interactive reads them from a pipe too):
  +3 +7  like songs 3 and 7 (喜欢): they seed the next playlist     -5    skip song 5 (跳过): never again
  more   the next songs of this playlist (更多)                      new   forget the likes (重新开始)
"""

import logging
import sys
import threading

from playlist_gen.cli import parse_overrides, run_script, usage_error
from playlist_gen.session import PlaylistMaker

log = logging.getLogger(__name__)

PROMPT = "歌单标题或反馈 / title or feedback (+3 -5 more new): "
EXIT_WORDS = {"exit", "quit", "q", "退出"}


def check_options(cfg) -> None:
    """Fail before any loading (and before the prompt) on a missing model or a stale or half-written stage: the
    manifests' chain and stamps (size, mtime) of what is read, so no large file is hashed on the way to the first
    playlist. Option values were checked with the config."""
    from playlist_gen import manifest
    from playlist_gen.generation import require_model, trained_members
    from playlist_gen.io import PipelineError

    if cfg.generate.explain and cfg.recommend.method == "random_cluster":
        raise PipelineError("--explain needs a recommender that scores songs; random_cluster draws clusters at "
                            "random: use another --recommend.method, or leave --explain out")
    reads = manifest.Reads(cfg, thorough=False)
    if cfg.recommend.method in ("model", "fusion"):
        require_model(cfg)
        reads.require("model", [cfg.final_model_dir, *trained_members(cfg)])
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


def repl(maker: Background, record=None) -> None:
    """Ask for titles and feedback until exit/quit, Ctrl-D or Ctrl-C; an empty line asks again. `record`: where
    every playlist, like and skip goes (a FeedbackLog's record)."""
    from playlist_gen.session import FEEDBACK_HELP, Session

    print(FEEDBACK_HELP)
    session = None
    while True:
        try:
            line = input(PROMPT).strip()
            if line.lower() in EXIT_WORDS:
                return
            if line:
                session = session or Session(maker.get(), record)
                print(session.handle(line), flush=True)
        except (EOFError, KeyboardInterrupt):
            print()
            return


def show(maker: PlaylistMaker, title: str) -> None:
    title = title.strip()
    print(maker.format(title, maker.playlist(title)), flush=True)


def loaded(cfg) -> PlaylistMaker:
    """The maker, after printing what each --seed_songs entry matched."""
    maker = PlaylistMaker(cfg)
    if maker.note:
        print(maker.note, file=sys.stderr)  # advice, not a playlist: stdout stays playlists only
    if maker.matched:
        print(maker.matched)
    return maker


SECTIONS = ("generate", "recommend")  # the config sections --help lists first


def main(argv=None):
    from playlist_gen.io import PipelineError
    from playlist_gen.text import invalid_utf8

    cfg, given = parse_overrides(argv, __doc__, SECTIONS)
    if "generate.title" in given and not cfg.generate.title.strip():
        usage_error("--title is blank: give a title, or leave --title out to type titles at a prompt")
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # bytes that are not UTF-8 reach the check below
    if cfg.generate.serve:
        from playlist_gen.http_api import serve

        check_options(cfg)
        serve(cfg)
    elif cfg.generate.title.strip():
        check_options(cfg)
        show(loaded(cfg), cfg.generate.title)
    elif not sys.stdin.isatty() and not cfg.generate.interactive:
        maker = None
        for number, line in enumerate(sys.stdin, 1):
            bad = invalid_utf8(line)
            if bad:
                raise PipelineError(f"stdin line {number} is not valid UTF-8 ({bad}): pipe titles in UTF-8")
            if line.strip():
                if maker is None:
                    check_options(cfg)
                    maker = loaded(cfg)
                show(maker, line)
                print()
        if maker is None:
            raise PipelineError("no title on stdin (only blank lines): pipe one title per line, or use --title")
    else:
        check_options(cfg)
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.WARNING)  # no INFO lines of the loading thread onto the prompt
        from playlist_gen.feedback_log import FeedbackLog
        from playlist_gen.service import served_versions

        log_db = FeedbackLog(cfg.feedback_db_path, served_versions(cfg), source="cli")
        try:
            repl(Background(lambda: loaded(cfg)), log_db.record)
        finally:
            root.setLevel(level)
            log_db.close()


if __name__ == "__main__":
    run_script(main)
