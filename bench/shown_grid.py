"""Which playlist to show: precision@20, distinct artists and repeat share of --pick variants on trained runs.

    .venv/bin/python -m bench.shown_grid RUN [RUN ...] [--eval.split=val] [--any.config=value ...]

RUN is a folder of bench/study_run.sh or bench/cv.sh (RUN/data, RUN/out, RUN/models). recommend.method (fusion by
default; config overrides after the runs apply to every run) ranks the songs of each playlist of the split once;
every variant then takes its --num_songs (20) from that ranking, as generate_playlist.py does
(playlist_gen.shown). "repeat" is the share of songs the same when the title is asked again (another seed).
Each cell is the mean over the runs and, in parentheses, their standard deviation. The README's policy choice was
made with it on the validation splits of the folds.
"""

import sys

import numpy as np

from evaluate_tiger import load_test_playlists, shown_metrics, shown_playlist
from playlist_gen import metrics
from playlist_gen.catalogue import load_catalogue
from playlist_gen.cli import parse_config
from playlist_gen.data import load_playlists
from playlist_gen.factory import load_recommenders
from playlist_gen.recommend import Request
from playlist_gen.shown import ShowPolicy, candidates

VARIANTS = [("ranked", {}), ("diverse", {"max_per_artist": 1}), ("diverse", {"max_per_artist": 2}),
            ("diverse", {"max_per_artist": 3}), ("cluster", {}), ("popular", {}), ("weighted", {}), ("random", {})] + \
           [("sample", {"temperature": t}) for t in (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)]


def run_scores(run: str, overrides: list[str]) -> dict[str, dict]:
    cfg = parse_config([f"--data_dir={run}/data", f"--output_dir={run}/out", f"--model_dir={run}/models",
                        "--eval.split=val", *overrides])
    g, method = cfg.generate, cfg.recommend.method
    playlists = load_playlists(cfg)
    catalogue = load_catalogue(cfg, playlists, write=False)
    recs = load_recommenders(cfg, sorted({method, "title_knn"}), "cpu", "popular", catalogue)
    test = load_test_playlists(cfg, playlists, catalogue.index)
    artists = dict(zip(playlists.song_info["song_id"], playlists.song_info["artist"]))

    def artist_of(s):
        return artists.get(s, "?")

    requests = [Request(p.text, candidates(g.num_songs), g.num_songs, cfg.seed + p.i, p.seeds) for p in test]
    out = {name: [x for i in range(0, len(requests), 64) for x in r.recommend(requests[i:i + 64])]
           for name, r in recs.items()}
    rows: dict[str, list[dict]] = {}
    for pick, kw in VARIANTS:
        policy = ShowPolicy(pick, g.num_songs, **{"max_per_artist": g.max_per_artist, **kw})
        name = f"{pick} " + " ".join(f"{k}={v}" for k, v in kw.items())
        for p, rec in zip(test, out[method]):
            first = shown_playlist(rec, catalogue, policy, cfg.seed + p.i, p.seeds)
            again = shown_playlist(rec, catalogue, policy, cfg.seed + p.i + 1, p.seeds)
            row = shown_metrics(first, p.truth, g.num_songs, catalogue, artist_of)
            rows.setdefault(f"{method}: {name}", []).append({**row, "shown_repeat": metrics.overlap(first, again)})
    for name, recs_out in out.items():
        for p, rec in zip(test, recs_out):
            row = shown_metrics(rec.songs[:g.num_songs], p.truth, g.num_songs, catalogue, artist_of)
            rows.setdefault(f"{name}: its top {g.num_songs}", []).append({**row, "shown_repeat": 1.0})
    return {name: metrics.mean_table(r) for name, r in rows.items()}


def main() -> None:
    args = sys.argv[1:]
    runs = [a for a in args if not a.startswith("--")]
    overrides = [a for a in args if a.startswith("--")]
    per_run = [run_scores(r, overrides) for r in runs]
    n = next(k for k in per_run[0][next(iter(per_run[0]))] if k.startswith("shown_precision@"))
    print(f"the shown playlist on {len(runs)} run(s) {' '.join(overrides)}: mean (std)")
    print(f"| variant | {n} | artists | clusters | popularity rank | repeat |\n|---|---|---|---|---|---|")
    for name in per_run[0]:
        cells = []
        for key, digits in ((n, 3), ("shown_artists", 1), ("shown_clusters", 1), ("shown_popularity_rank", 0),
                            ("shown_repeat", 2)):
            v = [r[name][key] for r in per_run]
            cells.append(f"{np.mean(v):.{digits}f} (±{np.std(v, ddof=1) if len(v) > 1 else 0:.{digits}f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
