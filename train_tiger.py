"""Stage 3: train the T5 model that maps a playlist title to a sequence of semantic-ID tokens.

Reads train.tsv/val.tsv and corpus_meta.json (output_dir), trains with early stopping on validation
loss, checkpointing every --tiger.save_steps to model_dir/tiger_checkpoints and resuming from the last
checkpoint when re-run. Writes model_dir/tiger_final (model, tokenizer, tiger_meta.json with the manifest ids of
the corpus and semantic IDs it was trained on), the loss curve and train_summary.json. One device: `python
train_tiger.py`; several: `torchrun --nproc_per_node=N train_tiger.py` (GPUs, or CPU processes with gloo).
"""

import contextlib
import logging
import os
import time

from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.device import share_cores_gracefully
from playlist_gen.io import PipelineError, exclusive

log = logging.getLogger(__name__)

SECTIONS = ("tiger",)  # the config sections --help lists first


def main(argv=None):
    cfg = parse_config(argv, __doc__, SECTIONS)
    if share_cores_gracefully():  # before torch is imported
        log.info("other processes keep the cores busy: OpenMP threads sleep at barriers instead of spinning")
    first = os.environ.get("RANK", "0") == "0"  # under torchrun the first process holds the folder for all
    with exclusive(cfg.model_dir, "train_tiger.py") if first else contextlib.nullcontext():
        train(cfg)


def train(cfg) -> None:
    import pandas as pd
    from transformers import set_seed

    from playlist_gen import checkpoints, e5_prefix, examples, losses, manifest, training
    from playlist_gen.io import write_json
    from playlist_gen.modeling import build_model, save_final, semantic_tokens

    tc = cfg.tiger
    e5_prefix.check_options(tc)
    reads = manifest.Reads(cfg)
    corpus_meta, id_meta, train_df, val_df = examples.load_corpus(cfg, reads)
    if tc.index_pairs:  # pseudo-playlists of song and artist names, trained like titles
        reads.require("semantic_ids", [cfg.semantic_ids_path])
        reads.require("data", [cfg.song_info_path])
        train_df = pd.concat([train_df, examples.index_rows(cfg, corpus_meta["token_scheme"])], ignore_index=True)
    trained_on = {"corpus": reads.upstream["corpus"], "semantic_ids": reads.upstream["semantic_ids"]}
    args = training.training_arguments(cfg)  # sets up torch.distributed under torchrun
    is_main = args.process_index == 0
    if not is_main:
        logging.getLogger().setLevel(logging.WARNING)
    semantic = semantic_tokens(corpus_meta)
    fp = checkpoints.fingerprint(tc, corpus_meta, trained_on, cfg.seed)
    tok, last = checkpoints.shared_tokenizer(cfg, args, list(train_df["title"]), semantic, fp)
    seed = training.run_seed(cfg)
    set_seed(seed)  # same initial weights on every rank
    model = build_model(tc, tok)
    levels = int(corpus_meta["levels"])
    e5 = e5_prefix.training_embedder(cfg.e5_cache_path, args, write=is_main) if tc.e5_prefix else None
    train_features = examples.encode_split(tok, train_df, tc, levels, seed, str(cfg.split_path("train")), e5=e5)
    val_features = examples.encode_split(tok, val_df, tc, levels, seed, str(cfg.split_path("val")), train=False,
                                         e5=e5)
    if tc.e5_prefix:
        model.fit_e5(train_features.e5)
    ranking = None
    if tc.select_by == "ndcg":
        from playlist_gen.semantic_ids import load_semantic_ids
        from playlist_gen.val_ranking import ClusterNDCG

        reads.require("semantic_ids", [cfg.semantic_ids_path])
        ranking = ClusterNDCG(val_features, set(load_semantic_ids(cfg)[0].values()), corpus_meta["codebook_sizes"],
                              tok, corpus_meta["token_scheme"])
    trainer = training.make_trainer(model, tok, args, train_features, val_features, tc.early_stopping_patience,
                                   tc.label_smoothing, ranking)
    if last:
        log.info("resuming from %s", last)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = time.perf_counter() - start
    if trainer.state.global_step == 0:
        raise PipelineError(f"no training step ran; {cfg.final_model_dir} is left as it was")
    if is_main:
        val_loss = losses.token_loss(trainer.model, val_features, trainer.data_collator, tc.batch_size * 2)
        blind = losses.title_blind_loss(train_df["target"], val_df["target"], semantic, tc.objective, levels)
        meta = training.final_meta(tc, corpus_meta, id_meta, val_loss=val_loss, title_blind_loss=blind,
                                   trained_on=trained_on)
        files = [cfg.final_model_dir, cfg.loss_curve_csv_path, cfg.loss_curve_png_path, cfg.train_summary_path]
        manifest.begin(cfg, "model", files)
        save_final(trainer.model, tok, meta, cfg.final_model_dir)
        losses.write_loss_curve(losses.loss_rows(trainer.state.log_history), cfg.loss_curve_csv_path,
                                  cfg.loss_curve_png_path, blind)
        resumed = int(last.name.rsplit("-", 1)[1]) if last else None
        write_json(cfg.train_summary_path, training.summary(trainer, val_loss, blind, seconds, resumed,
                                                            len(train_df), len(val_df)))
        save_config(cfg, "train_tiger")
        manifest.finish(cfg, "model", files, reads)
        print(f"val_loss {val_loss:.4f} vs title_blind_loss {blind:.4f} (nats per target token); "
              f"{trainer.state.global_step:,} steps in {seconds:.0f} s; model in {cfg.final_model_dir}")
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    run_script(main)
