"""What grouping the tuples objective's batches by input length does to a batch: the share of the encoder's
positions that are padding, and how many distinct playlists a batch's entries come from, for shuffled batches
and for the Trainer's length-grouped order at several megabatch sizes (`mega_batch_mult` x batch entries are
sorted by length, then cut into batches; `--tiger.group_titles` uses transformers' default, 50).

    .venv/bin/python -m bench.batch_mix --data_dir=D --output_dir=O --model_dir=M [--seed=42 --corpus.folds=10
        --corpus.fold=0] [--batches=64,256]

M must hold the run's tokenizer (`tiger_checkpoints/tokenizer`, written by train_tiger.py). Input lengths are the
full input texts' (title and tags, where the corpus has tags).
"""

import sys

import numpy as np
import torch

MULTS = (0, 2, 4, 8, 16, 50)  # 0: shuffled


def main() -> None:
    from transformers import PreTrainedTokenizerFast
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from playlist_gen import examples, manifest
    from playlist_gen.cli import parse_config

    batches = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--batches=")), "64,256")
    cfg = parse_config([a for a in sys.argv[1:] if not a.startswith("--batches=")])
    meta, _, train_df, _ = examples.load_corpus(cfg, manifest.Reads(cfg))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(cfg.checkpoint_dir / "tokenizer" / "tokenizer.json"))
    ex = examples.encode_split(tok, train_df, cfg.tiger, int(meta["levels"]), cfg.seed)
    lengths = ex.entry_input_lengths()
    print(f"{len(lengths):,} entries of {len(ex.targets):,} playlists; input tokens mean {lengths.mean():.2f}, "
          f"median {np.median(lengths):.0f}, max {lengths.max()}")
    print("| batch | order | padding | playlists per batch |\n|---|---|---|---|")
    for batch in map(int, batches.split(",")):
        for mult in MULTS:
            if mult == 0:
                order = np.random.default_rng(cfg.seed).permutation(len(lengths))
            else:
                order = np.array(get_length_grouped_indices(lengths.tolist(), batch, mega_batch_mult=mult,
                                                            generator=torch.Generator().manual_seed(cfg.seed)))
            full = order[:len(order) // batch * batch].reshape(-1, batch)
            padding = 1 - lengths[full].sum() / (lengths[full].max(axis=1).sum() * batch)
            mix = np.mean([len(np.unique(ex.row_playlist[b])) for b in full])
            label = "shuffled" if mult == 0 else f"grouped, megabatch {mult} x {batch}"
            print(f"| {batch} | {label} | {padding:.0%} | {mix:.1f} |")


if __name__ == "__main__":
    main()
