#!/usr/bin/env bash
# One variant over cross-validation folds: every stage per fold (bench/study_run.sh), then the table with mean ± std.
#
#   bench/cv.sh mpd|ne|demo NAME "0 1 2" [--flag=value ...]     # folds 0-2 of FOLDS (10) as the test sets
#   bench/cv.sh eval BASE NAME [--flag=value ...]                # evaluation-only variant of BASE's folds
#
# Each fold's test split is a tenth of the playlists (grouped by normalised title; the folds' test sets are
# disjoint), validation 5% of the rest, seed 42. Runs land in runs/NAME/fK/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs}
if [ "$1" = eval ]; then
  bench/study_run.sh "$@"
  NAME=$3
else
  DATA=$1; NAME=$2; FOLD_LIST=$3; shift 3
  for K in $FOLD_LIST; do bench/study_run.sh "$DATA" "$NAME" "f$K" "$@"; done
fi
$PY -m bench.study "$RUNS/$NAME"/f*/out
