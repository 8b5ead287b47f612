"""train_tiger.py, then evaluate_tiger.py, in the same torchrun processes: the end-to-end test launches
`torchrun --nproc_per_node=2 tests/torchrun_stages.py TRAIN_ARGS -- EVAL_ARGS` once and checks both stages'
multi-process results. It runs as a script too (torchrun without `--run-path`)."""

import gc
import sys

import evaluate_tiger
import train_tiger

if __name__ == "__main__":
    import transformers.trainer  # noqa: F401  (as tests/conftest.py: gc.collect() then skips these objects)

    gc.freeze()
    cut = sys.argv.index("--")
    train_tiger.main(sys.argv[1:cut])
    evaluate_tiger.main(sys.argv[cut + 1:])
