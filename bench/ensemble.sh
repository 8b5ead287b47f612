#!/usr/bin/env bash
# Ensembles over init seeds on cross-validation folds: for every fold of runs/BASE (bench/cv.sh), another model per
# seed trained on the same corpus with --tiger.init_seed=SEED (runs/BASE/fK/models/sSEED, its own output folder
# runs/BASE/fK/out_sSEED; kept when already there), then runs/NAME: BASE's evaluation with
# --recommend.ensemble=sSEED/tiger_final,... (the models --tiger.ensemble=N trains: seeds 42+1 .. 42+N-1).
#
#   bench/ensemble.sh BASE NAME SEED[,SEED...] [--flag=value ...]      # the flags BASE was trained with
#   .venv/bin/python -m bench.study --row=LABEL --vs=BASE runs/NAME/f*/out
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs}
BASE=$1; NAME=$2; SEEDS=$3; shift 3
MEMBERS=""
for SEED in ${SEEDS//,/ }; do
  MEMBERS="$MEMBERS${MEMBERS:+,}s$SEED/tiger_final"
  for R in "$RUNS/$BASE"/f*; do
    K=$(basename "$R"); K=${K#f}
    [ -f "$R/models/s$SEED/tiger_final/tiger_meta.json" ] && continue
    rm -rf "$R/out_s$SEED" "$R/models/s$SEED"; cp -r "$R/out" "$R/out_s$SEED"
    ( time $PY train_tiger.py --data_dir="$R/data" --output_dir="$R/out_s$SEED" --model_dir="$R/models/s$SEED" \
        --seed=42 --corpus.folds="${FOLDS:-10}" --corpus.fold="$K" --tiger.init_seed="$SEED" --tiger.ensemble=1 "$@" ) \
      > "$R/log_s$SEED.txt" 2>&1
  done
done
bench/study_run.sh eval "$BASE" "$NAME" --recommend.ensemble="$MEMBERS"
$PY -m bench.study "$RUNS/$NAME"/f*/out
