#!/usr/bin/env bash
# Time to quality of one encoder pass per title (--tiger.tuples_per_pass=K) against one example per entry (K=1):
# for each K and epoch budget, train_tiger.py on a prepared run's corpus into its own folders, then the model alone
# on the test split. Prints one row per run: K, epochs, steps, training seconds, val loss, model NDCG@100, shown P@20.
#
#   bench/title_pass.sh RUN "1 8" "1 3" --seed=42 --corpus.folds=10 --corpus.fold=0   # flags: the run's split
#
# RUN holds data/ and out/ of a run whose prepare_corpus.py is done (e.g. runs/listen/f0); results go to RUN_tp/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=$1; KS=$2; EPOCHS=$3; shift 3
for K in $KS; do
  for E in $EPOCHS; do
    T=${RUN}_tp/k${K}e${E}
    rm -rf "$T"; mkdir -p "$T"
    cp -r "$RUN/out" "$T/out"; rm -f "$T/out/metrics.json"
    D="--data_dir=$RUN/data --output_dir=$T/out --model_dir=$T/models $*"
    # shellcheck disable=SC2086
    $PY train_tiger.py $D --tiger.tuples_per_pass="$K" --tiger.epochs="$E" --tiger.ensemble=1 > "$T/log.txt" 2>&1
    # shellcheck disable=SC2086
    $PY evaluate_tiger.py $D --eval.methods=model --eval.shown_policies=sample >> "$T/log.txt" 2>&1
    $PY - "$T" "$K" "$E" <<'PY'
import json, sys
t, k, e = sys.argv[1:]
s = json.load(open(f"{t}/out/train_summary.json"))
m = json.load(open(f"{t}/out/metrics.json"))["model"]
print(f"| {k} | {e} | {s['steps']} | {s['train_seconds']:.0f} | {s['val_loss']:.4f} | {m['ndcg@100']:.4f} "
      f"| {m['shown_precision@20']:.4f} |", flush=True)
PY
  done
done
