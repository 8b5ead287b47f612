"""The README's study tables from finished runs' metrics.json: mean ± standard deviation over runs (folds or seeds).

    .venv/bin/python -m bench.study [--methods=model,fusion,title_knn] OUTPUT_DIR [OUTPUT_DIR ...]
    .venv/bin/python -m bench.study --row=LABEL OUTPUT_DIR [...]       # one compact row: "model / fusion" per cell
    .venv/bin/python -m bench.study --policies OUTPUT_DIR [...]        # the shown playlist per --pick policy
    .venv/bin/python -m bench.study --row=LABEL --vs=BASE_NAME OUTPUT_DIR [...]  # + fusion's gain over BASE's,
                                                                       # paired by fold: mean (std)

Runs come from bench/cv.sh or bench/study_run.sh (runs/NAME/fK or sSEED/out). Each OUTPUT_DIR is a run's
--output_dir after evaluate_tiger.py (its train_summary.json gives the training time). With several, each cell is
the mean over runs and, in parentheses, their standard deviation: a difference between two rows counts when it is
larger than that spread. "× kNN" is a method's NDCG@100 over title kNN's of the same run, averaged over runs.
"""

import json
import sys
from pathlib import Path

import numpy as np

COLUMNS = (("r_precision", "R-prec"), ("ndcg@100", "NDCG@100"), ("recall@100", "Recall@100"),
           ("cluster_f1", "cluster F1"), ("shown_precision@20", "shown P@20"), ("shown_artists", "shown artists"))
POLICY_COLUMNS = (("shown_precision@20", "P@20"), ("shown_ndcg@20", "NDCG@20"), ("shown_recall@20", "Recall@20"),
                  ("shown_artists", "artists"), ("shown_clusters", "clusters"),
                  ("shown_popularity_rank", "popularity rank"), ("shown_repeat", "repeat"))
DIGITS = {"shown_artists": 1, "shown_clusters": 1, "shown_popularity_rank": 0, "shown_repeat": 2, "top_artists": 1}


def load(out: Path) -> tuple[dict, float | None]:
    metrics = json.loads((out / "metrics.json").read_text())
    summary = out / "train_summary.json"
    seconds = json.loads(summary.read_text())["train_seconds"] if summary.exists() else None
    return metrics, seconds


def cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    mean = float(np.mean(values))
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} (±{np.std(values, ddof=1):.{digits}f})"


def ratio(runs, method: str) -> list[float]:
    return [r[method]["ndcg@100"] / r["title_knn"]["ndcg@100"] for r, _ in runs if method in r and "title_knn" in r]


def rows(outs: list[Path], methods: list[str] | None) -> list[str]:
    runs = [load(o) for o in outs]
    methods = methods or [m for m in runs[0][0] if m != "shown_policies"]
    seconds = [s for _, s in runs if s is not None]
    lines = []
    for m in methods:
        cells = [cell([r[m][key] for r, _ in runs if key in r[m]], DIGITS.get(key, 3)) for key, _ in COLUMNS]
        time = f"{np.mean(seconds):.0f}" if seconds and m in ("model", "fusion") else ""
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {time} | {cell(ratio(runs, m), 2)} |")
    return lines


def paired_gain(outs: list[Path], base: str, method: str = "fusion") -> str:
    """NDCG@100 of `method` over the same method in runs/BASE/<the same fold>/out, -1, in percent: mean (std)."""
    gains = []
    for o in outs:
        ref = Path(o).parents[1].parent / base / Path(o).parent.name / "out"
        gains.append(load(o)[0][method]["ndcg@100"] / load(ref)[0][method]["ndcg@100"] - 1)
    sd = np.std(gains, ddof=1) if len(gains) > 1 else 0.0
    return f"{100 * np.mean(gains):+.1f}% (±{100 * sd:.1f}%)"


def compact(outs: list[Path], label: str) -> str:
    """`| label | R-prec | NDCG | Recall | cluster F1 | shown P@20 | kNN NDCG | model × kNN | fusion × kNN | train s |`,
    cells "model / fusion" (means over runs; a method the runs lack is "-")."""
    runs = [load(o) for o in outs]

    def mean(m, key):
        values = [r[m][key] for r, _ in runs if m in r and key in r[m]]
        return f"{np.mean(values):.3f}" if values else "-"

    cells = [f"{mean('model', key)} / {mean('fusion', key)}" for key, _ in COLUMNS[:5]]
    seconds = [s for _, s in runs if s is not None]
    time = f"{np.mean(seconds):.0f}" if seconds else "-"
    return (f"| {label} | " + " | ".join(cells) + f" | {mean('title_knn', 'ndcg@100')} | "
            f"{cell(ratio(runs, 'model'), 2)} | {cell(ratio(runs, 'fusion'), 2)} | {time} |")


def policies(outs: list[Path]) -> list[str]:
    """One row per --pick policy of the runs' recommend.method, then each method's shown playlist and top 20."""
    runs = [load(o)[0] for o in outs]
    lines = ["| shown playlist | " + " | ".join(name for _, name in POLICY_COLUMNS) + " |",
             "|---" * (len(POLICY_COLUMNS) + 1) + "|"]
    for pick in runs[0].get("shown_policies", {}):
        cells = [cell([r["shown_policies"][pick][key] for r in runs], DIGITS.get(key, 3)) for key, _ in POLICY_COLUMNS]
        lines.append(f"| --pick={pick} | " + " | ".join(cells) + " |")
    for m in ("title_knn", "model", "popularity"):
        if m in runs[0]:
            top = [r[m] for r in runs if "top_artists" in r[m]]
            lines.append(f"| {m}: its top 20 | {cell([t['top_precision@20'] for t in top])} | - | - | "
                         f"{cell([t['top_artists'] for t in top], 1)} | - | - | 1 |")
    return lines


def main() -> None:
    args = sys.argv[1:]
    outs = [Path(a) for a in args if not a.startswith("--")]
    label = next((a.split("=", 1)[1] for a in args if a.startswith("--row=")), None)
    base = next((a.split("=", 1)[1] for a in args if a.startswith("--vs=")), None)
    if not outs:
        sys.exit("usage: python -m bench.study [--row=LABEL --vs=BASE_NAME [--gain_of=model] | --policies | "
                 "--methods=a,b] runs/NAME/f*/out ...")
    if label is not None:
        method = next((a.split("=", 1)[1] for a in args if a.startswith("--gain_of=")), "fusion")
        print(compact(outs, label) + (f" {paired_gain(outs, base, method)} |" if base else ""))
        return
    if "--policies" in args:
        print("\n".join(policies(outs)))
        return
    methods = next((a.split("=", 1)[1].split(",") for a in args if a.startswith("--methods=")), None)
    print("| method | " + " | ".join(name for _, name in COLUMNS) + " | train s | NDCG × kNN |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    print("\n".join(rows(outs, methods)))
    print(f"({len(outs)} run{'s' * (len(outs) != 1)}: {', '.join(map(str, outs))})")


if __name__ == "__main__":
    main()
