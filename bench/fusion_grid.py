"""How to fuse the recommenders' song distributions: NDCG@100 of fusion variants on one trained run's split.

    .venv/bin/python -m bench.fusion_grid RUN [RUN ...] [--split=val] [--seed_songs=0] [--e5=1] [--title_only=1]
        [--ensemble=FOLDERS]

RUN is a folder of bench/study_run.sh (RUN/data, RUN/out, RUN/models). Without seed songs it grids the title
fusion (floor f, model weight w, popularity share p); with them, how co-occurrence with the seeds joins the title
fusion (product exponent s, a PMI form, a mixture share). Each line is the mean over the runs. The README's fusion
findings were measured with it on the validation split. --e5=1 grids the e5 kNN expert's share e of the retrieval
exponent (recommend.e5_weight) against the model weight w; --title_only=1 gives the requests the title alone;
--ensemble passes --recommend.ensemble (other models of each run, e.g. s43/tiger_final) to the model.
Each line is the mean over the runs and, in parentheses, their standard deviation.
"""

import sys

import numpy as np

from evaluate_tiger import load_test_playlists
from playlist_gen import metrics
from playlist_gen.catalogue import load_catalogue
from playlist_gen.cli import parse_config
from playlist_gen.data import load_playlists
from playlist_gen.factory import load_recommenders
from playlist_gen.recommend import Request, floored_log


def distributions(run: str, split: str, k: int, e5: bool = False, title_only: bool = False, ensemble: str = ""):
    cfg = parse_config([f"--data_dir={run}/data", f"--output_dir={run}/out", f"--model_dir={run}/models",
                        f"--eval.split={split}", f"--eval.seed_songs={k}", f"--eval.title_only={title_only}",
                        f"--recommend.ensemble={ensemble}"])
    playlists = load_playlists(cfg)
    catalogue = load_catalogue(cfg, playlists, write=False)
    methods = ["model", "title_knn", "popularity"] + (["cooccurrence"] if k else []) + (["e5_knn"] if e5 else [])
    recs = load_recommenders(cfg, methods, "cpu", "popular", catalogue)
    test = load_test_playlists(cfg, playlists, catalogue.index)
    requests = [Request(p.text, 100, 1, 0, p.seeds) for p in test]
    P = {m: np.concatenate([recs[m].song_distributions(requests[i:i + 64]) for i in range(0, len(requests), 64)])
         for m in methods}
    given = [[catalogue.code[s] for s in p.seeds if s in catalogue.code] for p in test]

    def ndcg(scores: np.ndarray) -> float:
        out = []
        for i, p in enumerate(test):
            s = scores[i].copy()
            s[given[i]] = -np.inf
            out.append(metrics.ndcg_at_k([catalogue.songs[j] for j in np.argsort(-s, kind="stable")[:100]], p.truth,
                                         100))
        return float(np.mean(out))

    return P, ndcg


def normalised(log_p: np.ndarray) -> np.ndarray:
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def variants(P, k: int) -> dict[str, np.ndarray]:
    out = {"title kNN": P["title_knn"], "model": P["model"]}
    if "e5_knn" in P:
        out = {"default product w=0.4 (no e5)": normalised(0.4 * floored_log(P["model"], 0.01)
                                                          + 0.6 * floored_log(P["title_knn"], 0.01)), **out}
        out["e5 kNN"] = P["e5_knn"]
        logs = {m: floored_log(P[m], 0.01) for m in ("model", "title_knn", "e5_knn")}
        for w in (0.3, 0.4, 0.5, 0.6):
            for e in (0.0, 0.2, 0.35, 0.5, 0.65, 0.8):
                out[f"product w={w} e5 share e={e}"] = (w * logs["model"] + (1 - w) * (1 - e) * logs["title_knn"]
                                                        + (1 - w) * e * logs["e5_knn"])
        out["e5 kNN x title kNN, no model (e=0.5)"] = 0.5 * logs["title_knn"] + 0.5 * logs["e5_knn"]
        return out
    if not k:
        for f in (0.001, 0.01, 0.1):
            for w in (0.3, 0.4, 0.5):
                fused = normalised(w * floored_log(P["model"], f) + (1 - w) * floored_log(P["title_knn"], f))
                for p in (0.0, 0.02, 0.1):
                    out[f"product f={f} w={w} p={p}"] = (1 - p) * fused + p * P["popularity"]
            out[f"mixture w=0.4 f={f}"] = 0.4 * P["model"] + 0.6 * P["title_knn"]
        return out
    title = 0.4 * floored_log(P["model"], 0.01) + 0.6 * floored_log(P["title_knn"], 0.01)
    out["co-occurrence"] = P["cooccurrence"]
    for f in (0.01, 0.001, 0.0001):
        for s in (1, 2, 4, 8):
            out[f"product with co-occurrence f={f} s={s}"] = s * floored_log(P["cooccurrence"], f) + title
        for a in (0.25, 0.5, 1.0):
            out[f"PMI f={f} a={a}"] = floored_log(P["cooccurrence"], f) + a * (title - np.log(P["popularity"] + 1e-9))
    for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7):
        out[f"mixture s={s}"] = s * P["cooccurrence"] + (1 - s) * normalised(title)
    return out


def main() -> None:
    args = sys.argv[1:]
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--"))
    runs = [a for a in args if not a.startswith("--")]
    split, k = opts.get("split", "val"), int(opts.get("seed_songs", 0))
    e5, title_only = opts.get("e5", "0") == "1", opts.get("title_only", "0") == "1"
    scores: dict[str, list[float]] = {}
    for run in runs:
        P, ndcg = distributions(run, split, k, e5, title_only, opts.get("ensemble", ""))
        for name, s in variants(P, k).items():
            scores.setdefault(name, []).append(ndcg(s))
    print(f"NDCG@100 on {split}, {k} seed songs{', title only' if title_only else ''}, mean (std) over {len(runs)} "
          "run(s); then the gain over the first line of each run, paired: mean (std)")
    base = np.array(next(iter(scores.values())))
    for name, v in scores.items():
        gain = np.array(v) / base - 1
        sd = (np.std(v, ddof=1), np.std(gain, ddof=1)) if len(v) > 1 else (0, 0)
        print(f"{np.mean(v):.4f} ({sd[0]:.4f})  {100 * gain.mean():+.1f}% ({100 * sd[1]:.1f}%)  {name}")


if __name__ == "__main__":
    main()
