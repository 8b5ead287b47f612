#!/usr/bin/env bash
# Time to quality on MPD dev fold 0 (bench/RESULTS.md section 3): the default training against other layouts and
# batches, each followed by the model's evaluation on the fold's test playlists. Makes runs/ttq once (data, IDs, corpus).
#
#   bench/time_to_quality.sh a c b g h     # the rows to run, in order (see the case below)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=runs/ttq
S="--seed=42 --corpus.folds=10 --corpus.fold=0"
if [ ! -f $R/out/corpus_meta.json ]; then
  rm -rf $R; mkdir -p $R
  $PY prepare_data.py --source=mpd --path=../shared/data/mpd_dev.json.gz --data_dir=$R/data --output_dir=$R/out --model_dir=$R/models $S > $R/prep.log 2>&1
  $PY train_rq_kmeans.py --data_dir=$R/data --output_dir=$R/out --model_dir=$R/models $S >> $R/prep.log 2>&1
  $PY prepare_corpus.py --data_dir=$R/data --output_dir=$R/out --model_dir=$R/models $S >> $R/prep.log 2>&1
fi
run() {  # NAME PROCS ARGS...
  N=$1; P=$2; shift 2
  rm -rf $R/out_$N $R/models_$N; cp -r $R/out $R/out_$N
  D="--data_dir=$R/data --output_dir=$R/out_$N --model_dir=$R/models_$N $S --tiger.ensemble=1"
  if [ "$P" = 1 ]; then ( time $PY train_tiger.py $D "$@" ) > $R/$N.log 2>&1
  else ( time OMP_NUM_THREADS=1 $PY -m torch.distributed.run --standalone --nproc_per_node=$P train_tiger.py $D "$@" ) > $R/$N.log 2>&1; fi
  $PY evaluate_tiger.py $D --eval.methods=model,title_knn >> $R/$N.log 2>&1
  grep -E "^(ndcg@100|shown_precision@20) " $R/$N.log; cat $R/out_$N/train_summary.json; echo
}
for V in "$@"; do
  case $V in
    a) run a 1 ;;                                                        # the default
    c) run c 2 --tiger.threads=1 --tiger.batch_size=32 ;;                # same global batch and lr, 2 processes
    b) run b 2 --tiger.threads=1 --tiger.batch_size=128 --tiger.lr=4e-3 --tiger.eval_steps=125 --tiger.save_steps=125 ;;
    g) run g 1 --tiger.group_titles=true ;;
    h) run h 1 --tiger.group_titles=true --tiger.batch_size=256 --tiger.lr=4e-3 --tiger.eval_steps=125 --tiger.save_steps=125 ;;
    *) echo "error: row $V is not one of a c b g h" >&2; exit 2 ;;
  esac
done
