"""Simulated listeners: does the service learn from its feedback?

    .venv/bin/python -m bench.bench_listeners --data_dir=D --output_dir=O --model_dir=M [split options of the run]
        [--seeds=0,1,2] [--rounds=3] [--finetune]

The listeners are the test split's playlists (never trained on): each one's songs are its hidden taste, its
title what it types. In each title group (titles that normalise alike) the first test playlist is a *teacher*: it
asks for its title (20 songs), likes the shown songs that are in its hidden playlist and skips the others, then
asks for `more`, for --rounds rounds, through PlaylistService (the HTTP API's code), into a feedback log. The other
playlists of the group are *fresh listeners* with a related title, held out. Then the service learns:
`prepare_corpus.py --corpus.feedback=<log>` into a copy of the run's output_dir (the teachers' liked songs become
training playlists of their titles, which title kNN, e5 kNN, co-occurrence and popularity count); with --finetune
the T5 is then fine-tuned on that corpus from the run's model (`train_tiger.py --tiger.model_name=<the run's
tiger_final> --tiger.resume=false`, into a copy of model_dir), as the README says to. Measured before (the run as
it was: a service that learned nothing) and after, with the same seeds: NDCG@100 of the fused ranking and
precision@20 of the shown playlist, for the fresh listeners and for the teachers asking again. Printed per seed,
then the mean and standard deviation over seeds of after - before.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def options(argv):
    seeds = [int(s) for s in next((a.split("=")[1] for a in argv if a.startswith("--seeds=")), "0,1,2").split(",")]
    rounds = int(next((a.split("=")[1] for a in argv if a.startswith("--rounds=")), 3))
    rest = [a for a in argv if not a.startswith(("--seeds=", "--rounds=", "--finetune"))]
    return seeds, rounds, "--finetune" in argv, rest


def listeners(cfg):
    """(teachers, fresh): (raw title, hidden songs) per test playlist, split by title group."""
    from playlist_gen.corpus import read_split
    from playlist_gen.data import load_playlists
    from playlist_gen.text import title_key

    playlists = load_playlists(cfg)
    raw = dict(zip(playlists.info["playlist_id"], playlists.info["title"]))
    songs = playlists.song_lists()
    teachers, fresh, seen = [], [], set()
    for glid in read_split(cfg, "test")["glid"]:
        title, hidden = raw[glid], set(songs.get(glid, []))
        key = title_key(title)
        (fresh if key in seen else teachers).append((title, hidden))
        seen.add(key)
    return teachers, fresh


def measure(cfg, people, seed: int) -> tuple[float, float]:
    """(mean NDCG@100 of the ranking, mean precision@20 of the shown playlist) over `people` (nan for nobody)."""
    if not people:
        return float("nan"), float("nan")
    from playlist_gen.metrics import ndcg_at_k
    from playlist_gen.recommend import Request
    from playlist_gen.session import PlaylistMaker

    cfg.seed, cfg.generate.num_songs = seed, 20
    maker = PlaylistMaker(cfg)
    ndcg, precision = [], []
    for title, hidden in people:
        ranked = maker.recommender.recommend([Request(maker.text(title), 100, 20, seed)])[0].songs
        ndcg.append(ndcg_at_k(ranked, hidden, 100))
        shown = [s for s, _ in maker.playlist(title)]
        precision.append(sum(s in hidden for s in shown) / 20)
    return float(np.mean(ndcg)), float(np.mean(precision))


def teach(cfg, teachers, seed: int, rounds: int, db: Path) -> int:
    """The teachers' sessions through PlaylistService into the log at `db`; returns the likes given."""
    from playlist_gen.feedback_log import FeedbackLog
    from playlist_gen.service import PlaylistService

    cfg.seed, cfg.generate.num_songs = seed, 20
    service = PlaylistService(cfg)
    service.log = FeedbackLog(db, service.versions)
    likes = 0
    for title, hidden in teachers:
        playlist = service.create(title)
        for r in range(rounds):
            like = [s.position for s in playlist.songs if s.id in hidden]
            skip = [s.position for s in playlist.songs if s.id not in hidden]
            likes += len(like)
            playlist = service.feedback(playlist.id, like, skip, "more" if r < rounds - 1 else None)
            if playlist is None or not playlist.songs:
                break
    service.log.close()
    return likes


def main() -> None:
    import prepare_corpus
    import train_tiger
    from playlist_gen.cli import parse_config

    seeds, rounds, finetune, argv = options(sys.argv[1:])
    base = parse_config(argv)
    teachers, fresh = listeners(base)
    print(f"{len(teachers)} teachers (one per test title group), {len(fresh)} fresh listeners of their groups; "
          f"{rounds} rounds of 20 songs; learning: the corpus{' and a fine-tuned T5' if finetune else ''}")
    rows = []
    for seed in seeds:
        work = Path(tempfile.mkdtemp())
        shutil.copytree(base.output_dir, work / "out", ignore=shutil.ignore_patterns("feedback.db*"))
        learned = [a if not a.startswith("--output_dir=") else f"--output_dir={work / 'out'}" for a in argv]
        if finetune:
            shutil.copytree(base.model_dir, work / "models", ignore=shutil.ignore_patterns("tiger_checkpoints"))
            learned = [a if not a.startswith("--model_dir=") else f"--model_dir={work / 'models'}" for a in learned]
        likes = teach(parse_config(argv), teachers, seed, rounds, work / "feedback.db")
        prepare_corpus.main(learned + [f"--corpus.feedback={work / 'feedback.db'}"])
        if finetune:
            train_tiger.main(learned + [f"--tiger.model_name={base.final_model_dir}", "--tiger.resume=false"])
        row = {"seed": seed, "likes": likes}
        for name, people in (("fresh", fresh), ("again", teachers)):
            row[f"{name}_before"] = measure(parse_config(argv), people, seed)
            row[f"{name}_after"] = measure(parse_config(learned), people, seed)
        rows.append(row)
        print(f"seed {seed}: {likes} likes; " + "; ".join(
            f"{n}: NDCG@100 {row[n + '_before'][0]:.4f} -> {row[n + '_after'][0]:.4f}, shown P@20 "
            f"{row[n + '_before'][1]:.4f} -> {row[n + '_after'][1]:.4f}" for n in ("fresh", "again")), flush=True)
        shutil.rmtree(work)
    for name in ("fresh", "again"):
        if name == "fresh" and not fresh:
            print("fresh: none (no test title group here has a second playlist)")
            continue
        for i, metric in enumerate(("NDCG@100", "shown P@20")):
            before = np.array([r[f"{name}_before"][i] for r in rows])
            gain = np.array([r[f"{name}_after"][i] - r[f"{name}_before"][i] for r in rows])
            print(f"{name:5s} {metric:10s} before {before.mean():.4f}, after - before {gain.mean():+.4f} "
                  f"(± {gain.std(ddof=1) if len(gain) > 1 else 0:.4f} over {len(rows)} seeds)")


if __name__ == "__main__":
    main()
