"""The README's study table: one row per method from finished runs' metrics.json, averaged over runs (seeds).

    .venv/bin/python -m bench.study [--methods=model,fusion,title_knn] OUTPUT_DIR [OUTPUT_DIR ...]
    .venv/bin/python -m bench.study --row=LABEL OUTPUT_DIR [...]   # one compact row: "model / fusion" per cell

Runs come from bench/study_run.sh (runs/NAME/sSEED/out).

Each OUTPUT_DIR is a run's --output_dir after evaluate_tiger.py (its train_summary.json gives the training time).
With several, each cell is the mean over runs, then the spread (max - min) / 2 in parentheses. The last column is
the method's NDCG@100 over title kNN's of the same runs.
"""

import json
import sys
from pathlib import Path

import numpy as np

COLUMNS = (("r_precision", "R-prec"), ("ndcg@100", "NDCG@100"), ("recall@100", "Recall@100"),
           ("cluster_f1", "cluster F1"))


def load(out: Path) -> tuple[dict, float | None]:
    metrics = json.loads((out / "metrics.json").read_text())
    summary = out / "train_summary.json"
    seconds = json.loads(summary.read_text())["train_seconds"] if summary.exists() else None
    return metrics, seconds


def cell(values: list[float]) -> str:
    mean = float(np.mean(values))
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} (±{(max(values) - min(values)) / 2:.3f})"


def rows(outs: list[Path], methods: list[str] | None) -> list[str]:
    runs = [load(o) for o in outs]
    methods = methods or list(runs[0][0])
    seconds = [s for _, s in runs if s is not None]
    lines = []
    for m in methods:
        cells = [cell([r[m][key] for r, _ in runs]) for key, _ in COLUMNS]
        ratio = [r[m]["ndcg@100"] / r["title_knn"]["ndcg@100"] for r, _ in runs if "title_knn" in r]
        time = f"{np.mean(seconds):.0f}" if seconds and m in ("model", "fusion") else ""
        versus = f"{np.mean(ratio):.2f}" if ratio else ""  # runs without title kNN: no ratio
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {time} | {versus} |")
    return lines


def compact(outs: list[Path], label: str) -> str:
    """`| label | R-prec | NDCG | Recall | cluster F1 | kNN NDCG | fusion / kNN | train s |`, cells "model / fusion"
    (means over runs; a method the runs lack is "-")."""
    runs = [load(o) for o in outs]

    def mean(m, key):
        values = [r[m][key] for r, _ in runs if m in r]
        return f"{np.mean(values):.3f}" if values else "-"

    cells = [f"{mean('model', key)} / {mean('fusion', key)}" for key, _ in COLUMNS]
    ratio = [r["fusion"]["ndcg@100"] / r["title_knn"]["ndcg@100"] for r, _ in runs
             if "fusion" in r and "title_knn" in r]
    seconds = [s for _, s in runs if s is not None]
    time = f"{np.mean(seconds):.0f}" if seconds else "-"
    return (f"| {label} | " + " | ".join(cells) + f" | {mean('title_knn', 'ndcg@100')} | "
            + (f"{np.mean(ratio):.2f}" if ratio else "-") + f" | {time} |")


def main() -> None:
    args = sys.argv[1:]
    label = next((a.split("=", 1)[1] for a in args if a.startswith("--row=")), None)
    if label is not None:
        print(compact([Path(a) for a in args if not a.startswith("--")], label))
        return
    methods = next((a.split("=", 1)[1].split(",") for a in args if a.startswith("--methods=")), None)
    outs = [Path(a) for a in args if not a.startswith("--")]
    print("| method | " + " | ".join(name for _, name in COLUMNS) + " | train s | NDCG / kNN |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    print("\n".join(rows(outs, methods)))
    print(f"({len(outs)} run{'s' * (len(outs) != 1)}: {', '.join(map(str, outs))})")


if __name__ == "__main__":
    main()
