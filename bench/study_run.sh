#!/usr/bin/env bash
# The README's study rows: every stage of one variant, then evaluation on the validation split
# (metrics_val.json) and on the test split (metrics.json), in runs/NAME/sSEED/.
#
#   bench/study_run.sh mpd|ne|demo NAME SEED [--flag=value ...]     # the flags go to every stage
#   bench/study_run.sh mpd|ne|demo NAME fK [--flag=value ...]       # fold K of FOLDS (10) as the test, seed 42
#   bench/study_run.sh eval BASE NAME [--flag=value ...]            # evaluation-only variant of BASE's runs
#                                                                   # (TEST_ONLY=1: the test split only)
#   .venv/bin/python -m bench.study runs/NAME/s*/out                # the table row(s)
#
# mpd reads ../shared/data/mpd_dev.json.gz, ne a copy of ../shared/data/netease_dev, demo the built-in world.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs}
if [ "$1" = eval ]; then
  BASE=$2; NAME=$3; shift 3
  for R in "$RUNS/$BASE"/[sf]*; do
    S=$(basename "$R"); T=$RUNS/$NAME/$S
    rm -rf "$T"; mkdir -p "$T"; cp -r "$R/out" "$T/out"; ln -s "$(realpath "$R/models")" "$T/models"
    ln -s "$(realpath "$R/data")" "$T/data"
    case $S in f*) D="--seed=42 --corpus.folds=${FOLDS:-10} --corpus.fold=${S#f}" ;; *) D="--seed=${S#s}" ;; esac
    D="--data_dir=$T/data --output_dir=$T/out --model_dir=$T/models $D"
    if [ -z "${TEST_ONLY:-}" ]; then  # TEST_ONLY=1: a final run of settings chosen on validation elsewhere
      $PY evaluate_tiger.py $D --eval.split=val "$@" > "$T/log.txt" 2>&1
      mv "$T/out/metrics.json" "$T/out/metrics_val.json"
    fi
    $PY evaluate_tiger.py $D "$@" >> "$T/log.txt" 2>&1
  done
  exit 0
fi
DATA=$1; NAME=$2; SEED=$3; shift 3
case $SEED in
  f*) R=$RUNS/$NAME/$SEED; SPLIT="--corpus.folds=${FOLDS:-10} --corpus.fold=${SEED#f}"; SEED=42 ;;
  *) R=$RUNS/$NAME/s$SEED; SPLIT="" ;;
esac
rm -rf "$R"; mkdir -p "$R"
case $DATA in
  mpd) SRC="--source=mpd --path=../shared/data/mpd_dev.json.gz" ;;
  ne) SRC="--source=csv"; cp -r ../shared/data/netease_dev "$R/data"; chmod -R u+w "$R/data" ;;
  demo) SRC="--source=demo" ;;
  *) echo "error: data must be mpd, ne or demo, not $DATA" >&2; exit 2 ;;
esac
D="--data_dir=$R/data --output_dir=$R/out --model_dir=$R/models --seed=$SEED $SPLIT"
for stage in "prepare_data.py $SRC" train_rq_kmeans.py prepare_corpus.py train_tiger.py; do
  # shellcheck disable=SC2086
  ( time $PY $stage $D "$@" ) >> "$R/log.txt" 2>&1
done
$PY evaluate_tiger.py $D --eval.split=val "$@" >> "$R/log.txt" 2>&1
mv "$R/out/metrics.json" "$R/out/metrics_val.json"
$PY evaluate_tiger.py $D "$@" >> "$R/log.txt" 2>&1
echo "$R: $(grep -c . "$R/log.txt") log lines; table: $PY -m bench.study $R/out"
