"""Stage 3: train the T5 model that maps a playlist title to a sequence of semantic-ID tokens.

Reads train.tsv/val.tsv and corpus_meta.json (output_dir), trains with early stopping on validation
loss, checkpointing every --tiger.save_steps to model_dir/tiger_checkpoints and resuming from the last
checkpoint when re-run. Writes model_dir/tiger_final (model, tokenizer, tiger_meta.json with the manifest ids of
the corpus and semantic IDs it was trained on), the loss curve and train_summary.json. One device: `python
train_tiger.py`; several: `torchrun --nproc_per_node=N train_tiger.py` (GPUs, or CPU processes with gloo).
"""

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass

from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.device import share_cores_gracefully
from playlist_gen.io import PipelineError, exclusive

log = logging.getLogger(__name__)

SECTIONS = ("tiger",)  # the config sections --help lists first


def main(argv=None):
    cfg = parse_config(argv, __doc__, SECTIONS)
    if share_cores_gracefully():  # before torch is imported
        log.info("other processes keep the cores busy: OpenMP threads sleep at barriers instead of spinning")
    with exclusive(cfg.model_dir, "train_tiger.py") if first_rank() else contextlib.nullcontext():
        train(cfg)


@dataclass
class Run:
    """What every model of the run trains on (an ensemble's models share it)."""

    reads: object  # manifest.Reads
    corpus_meta: dict
    id_meta: dict
    train_df: object  # pandas DataFrames
    val_df: object
    trained_on: dict  # manifest ids of the corpus and semantic IDs
    blind: float  # the title-blind loss on the validation targets


@dataclass
class Fitted:
    trainer: object
    tok: object
    last: object  # the checkpoint resumed from, or None
    seconds: float
    val_loss: float  # rank 0 only (nan elsewhere)


def first_rank() -> bool:
    """The first process (under torchrun it holds the folder and writes for all)."""
    return os.environ.get("RANK", "0") == "0"


def train(cfg) -> None:
    import pandas as pd

    from playlist_gen import e5_prefix, examples, losses, manifest, training
    from playlist_gen.io import write_json
    from playlist_gen.modeling import save_final, semantic_tokens

    tc = cfg.tiger
    e5_prefix.check_options(tc)
    reads = manifest.Reads(cfg)
    corpus_meta, id_meta, train_df, val_df = examples.load_corpus(cfg, reads)
    if tc.index_pairs:  # pseudo-playlists of song and artist names, trained like titles
        reads.require("semantic_ids", [cfg.semantic_ids_path])
        reads.require("data", [cfg.song_info_path])
        train_df = pd.concat([train_df, examples.index_rows(cfg, corpus_meta["token_scheme"])], ignore_index=True)
    trained_on = {"corpus": reads.upstream["corpus"], "semantic_ids": reads.upstream["semantic_ids"]}
    blind = losses.title_blind_loss(train_df["target"], val_df["target"], semantic_tokens(corpus_meta), tc.objective,
                                    int(corpus_meta["levels"]))
    run = Run(reads, corpus_meta, id_meta, train_df, val_df, trained_on, blind)
    members = [train_member(member_config(cfg, k), run) for k in range(1, tc.ensemble)]
    folders = [cfg.member_model_dir(k) / "tiger_final" for k in range(1, tc.ensemble)]
    listed = [str(f.relative_to(cfg.model_dir)) for f in folders]  # as tiger_meta.json names them
    records = [cfg.loss_curve_csv_path, cfg.loss_curve_png_path, cfg.train_summary_path]
    files = [cfg.final_model_dir, *folders, *records]
    kept = trained_for(cfg, run) if all(p.exists() for p in records) else None
    if kept is not None:  # only the ensemble changed: the model stays, its record lists the members
        if first_rank():
            keep_model(cfg, {**kept, "members": listed}, members, files, reads)
        return
    args = training.training_arguments(cfg)  # sets up torch.distributed under torchrun
    fitted = fit(cfg, args, run)
    trainer, is_main = fitted.trainer, args.process_index == 0
    if is_main:
        meta = training.final_meta(tc, corpus_meta, id_meta, val_loss=fitted.val_loss, title_blind_loss=blind,
                                   trained_on=trained_on, fingerprint=fingerprint(cfg, run),
                                   steps=trainer.state.global_step, members=listed)
        manifest.begin(cfg, "model", files)
        save_final(trainer.model, fitted.tok, meta, cfg.final_model_dir)
        losses.write_loss_curve(losses.loss_rows(trainer.state.log_history), cfg.loss_curve_csv_path,
                                cfg.loss_curve_png_path, blind)
        summary = summarise(fitted, run)
        write_json(cfg.train_summary_path, with_members(summary, members))
        save_config(cfg, "train_tiger")
        manifest.finish(cfg, "model", files, reads)
        print(f"val_loss {fitted.val_loss:.4f} vs title_blind_loss {blind:.4f} (nats per target token); "
              f"{trainer.state.global_step:,} steps in {fitted.seconds:.0f} s; model in {cfg.final_model_dir}"
              + (f" (+ {len(members)} more in {cfg.member_model_dir(1).parent})" if members else ""))
    trainer.accelerator.wait_for_everyone()


def fingerprint(cfg, run: Run) -> dict:
    """What checkpoints of this very run, and a model trained by it, record (checkpoints.fingerprint)."""
    from playlist_gen import checkpoints

    return checkpoints.fingerprint(cfg.tiger, run.corpus_meta, run.trained_on, cfg.seed)


def with_members(summary: dict, members: list[dict]) -> dict:
    """train_summary.json: the first model's summary, with the other models' under "members" (none: no key)."""
    summary = {k: v for k, v in summary.items() if k != "members"}
    return {**summary, "members": members} if members else summary


def trained_for(cfg, run: Run) -> dict | None:
    """The tiger_meta.json of cfg's tiger_final when that model was trained for this very run (its fingerprint) and
    --tiger.resume is on, else None: a re-run keeps it instead of training on from its last checkpoint (after early
    stopping that would train again until the next evaluation)."""
    from playlist_gen.checkpoints import complete_checkpoint, with_defaults
    from playlist_gen.io import read_json

    if not cfg.tiger.resume or not cfg.model_meta_path.exists():
        return None
    meta = read_json(cfg.model_meta_path, "delete its folder and train again")
    last = complete_checkpoint(cfg.checkpoint_dir) if cfg.checkpoint_dir.is_dir() else None
    latest = last is not None and last.name == f"checkpoint-{meta.get('steps')}"  # no later run started since
    now = fingerprint(cfg, run)
    return meta if latest and "fingerprint" in meta and with_defaults(meta["fingerprint"], now) == now else None


def keep_model(cfg, meta: dict, members: list[dict], files, reads) -> None:
    """The main model was trained for this run already: its tiger_meta.json and train_summary.json now list the
    ensemble's other models, and the model manifest records them all."""
    from playlist_gen import manifest
    from playlist_gen.io import read_json, write_json

    manifest.begin(cfg, "model", files)
    write_json(cfg.model_meta_path, meta)
    summary = read_json(cfg.train_summary_path, "re-run with --tiger.resume=false")
    write_json(cfg.train_summary_path, with_members(summary, members))
    save_config(cfg, "train_tiger")
    manifest.finish(cfg, "model", files, reads)
    print(f"{cfg.final_model_dir} was trained for this run already: kept"
          + (f", with {len(members)} more in {cfg.member_model_dir(1).parent}" if members else "")
          + " (--tiger.resume=false trains it again)")


def member_config(cfg, k: int):
    """The config of an ensemble's model k >= 1: its own model_dir and init seed (the run's + k), the same splits.
    Fine-tuning the run's own model (--tiger.model_name=<model_dir>/tiger_final) fine-tunes each member from its own
    weights, when it has them."""
    from pathlib import Path

    from playlist_gen.training import run_seed

    tiger = dataclasses.replace(cfg.tiger, init_seed=run_seed(cfg) + k, ensemble=1)
    own = cfg.member_model_dir(k) / "tiger_final"
    if tiger.model_name and Path(tiger.model_name).resolve() == cfg.final_model_dir.resolve() and own.is_dir():
        tiger = dataclasses.replace(tiger, model_name=str(own))
    return dataclasses.replace(cfg, model_dir=str(cfg.member_model_dir(k)), tiger=tiger)


def train_member(cfg, run: Run) -> dict:
    """Trains (or resumes) one more model of an ensemble into its own tiger_final; a model already trained for this
    run (its fingerprint) is kept. Returns its training summary."""
    from playlist_gen import training
    from playlist_gen.modeling import save_final

    kept = trained_for(cfg, run)
    if kept is not None and "train_summary" in kept:
        log.info("ensemble model %s: already trained for this run, kept", cfg.final_model_dir)
        return kept["train_summary"]
    log.info("ensemble model %s (init seed %d)", cfg.final_model_dir, cfg.tiger.init_seed)
    args = training.training_arguments(cfg)
    fitted = fit(cfg, args, run)
    summary = summarise(fitted, run)
    if args.process_index == 0:
        meta = training.final_meta(cfg.tiger, run.corpus_meta, run.id_meta, val_loss=fitted.val_loss,
                                   title_blind_loss=run.blind, trained_on=run.trained_on,
                                   fingerprint=fingerprint(cfg, run), steps=fitted.trainer.state.global_step,
                                   train_summary=summary)
        save_final(fitted.trainer.model, fitted.tok, meta, cfg.final_model_dir)
    fitted.trainer.accelerator.wait_for_everyone()
    return summary


def fit(cfg, args, run: Run) -> Fitted:
    """One model: tokenizer, examples, the Trainer, training (resumed from the last checkpoint of the same run)."""
    from transformers import set_seed

    from playlist_gen import checkpoints, e5_prefix, examples, losses, training
    from playlist_gen.modeling import build_model, semantic_tokens

    tc, is_main = cfg.tiger, args.process_index == 0
    if not is_main:
        logging.getLogger().setLevel(logging.WARNING)
    semantic = semantic_tokens(run.corpus_meta)
    tok, last = checkpoints.shared_tokenizer(cfg, args, list(run.train_df["title"]), semantic, fingerprint(cfg, run))
    seed = training.run_seed(cfg)
    set_seed(seed)  # same initial weights on every rank
    model = build_model(tc, tok)
    levels = int(run.corpus_meta["levels"])
    e5 = e5_prefix.training_embedder(cfg.e5_cache_path, write=is_main) if tc.e5_prefix else None
    train_features = examples.encode_split(tok, run.train_df, tc, levels, seed, str(cfg.split_path("train")), e5=e5)
    val_features = examples.encode_split(tok, run.val_df, tc, levels, seed, str(cfg.split_path("val")),
                                         train=False, e5=e5)
    if tc.e5_prefix:
        model.fit_e5(train_features.e5)
    ranking = None
    if tc.select_by == "ndcg":
        from playlist_gen.semantic_ids import load_semantic_ids
        from playlist_gen.val_ranking import ClusterNDCG

        run.reads.require("semantic_ids", [cfg.semantic_ids_path])
        ranking = ClusterNDCG(val_features, set(load_semantic_ids(cfg)[0].values()),
                              run.corpus_meta["codebook_sizes"], tok, run.corpus_meta["token_scheme"])
    trainer = training.make_trainer(model, tok, args, train_features, val_features, tc.early_stopping_patience,
                                   tc.label_smoothing, ranking)
    if last:
        log.info("resuming from %s", last)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = time.perf_counter() - start
    if trainer.state.global_step == 0:
        raise PipelineError(f"no training step ran; {cfg.final_model_dir} is left as it was")
    val_loss = float("nan")
    if is_main:
        val_loss = losses.token_loss(trainer.model, val_features, trainer.data_collator, tc.batch_size * 2)
    return Fitted(trainer, tok, last, seconds, val_loss)


def summarise(fitted: Fitted, run: Run) -> dict:
    from playlist_gen import training

    resumed = int(fitted.last.name.rsplit("-", 1)[1]) if fitted.last else None
    return training.summary(fitted.trainer, fitted.val_loss, run.blind, fitted.seconds, resumed, len(run.train_df),
                            len(run.val_df))


if __name__ == "__main__":
    run_script(main)
