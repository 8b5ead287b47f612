"""Stage 3 training: the Seq2SeqTrainer set-up and what train_tiger.py records at the end.

Runs the same on one device and under `torchrun --nproc_per_node=N` (GPUs with NCCL, CPU processes with
gloo): the Trainer owns devices, precision and checkpoints; only rank 0 writes anything else. The examples,
the checkpoint policy, the losses and the CPU dropout live in their own modules (examples, checkpoints, losses,
fast_dropout).
"""

import functools
import os

import torch

from .device import resolve_device
from .fast_dropout import use_fast_cpu_dropout
from .io import PipelineError
from .losses import token_mean_loss


def training_arguments(cfg):
    """Seq2SeqTrainingArguments for this run; creating them sets up torch.distributed under torchrun."""
    from transformers import Seq2SeqTrainingArguments

    from .val_ranking import METRIC

    tc = cfg.tiger
    cuda = resolve_device("auto").startswith("cuda")
    if tc.precision not in ("auto", "fp32", "bf16"):
        raise PipelineError(f"--tiger.precision={tc.precision!r}: use auto, fp32 or bf16 (fp16 overflows in T5)")
    if tc.eval_steps < 1 or tc.save_steps % tc.eval_steps:
        raise PipelineError(f"--tiger.save_steps={tc.save_steps} must be a multiple of --tiger.eval_steps="
                            f"{tc.eval_steps} (the best checkpoint is chosen at evaluations)")
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # set by torchrun
    args = Seq2SeqTrainingArguments(
        output_dir=str(cfg.checkpoint_dir), seed=run_seed(cfg), data_seed=run_seed(cfg), report_to="none",
        per_device_train_batch_size=tc.batch_size, per_device_eval_batch_size=tc.batch_size * 2,
        learning_rate=tc.lr, weight_decay=tc.weight_decay, warmup_steps=tc.warmup_ratio, max_grad_norm=tc.grad_clip,
        num_train_epochs=tc.epochs, max_steps=tc.max_steps, lr_scheduler_type=tc.lr_scheduler,
        eval_strategy="steps", eval_steps=tc.eval_steps, save_strategy="steps", save_steps=tc.save_steps,
        save_total_limit=tc.save_total_limit, load_best_model_at_end=True,
        metric_for_best_model=METRIC if tc.select_by == "ndcg" else "eval_loss",
        greater_is_better=tc.select_by == "ndcg", restore_callback_states_from_checkpoint=True,
        prediction_loss_only=True,
        logging_strategy="steps", logging_steps=tc.logging_steps, disable_tqdm=False,
        bf16=bf16, use_cpu=not cuda, ddp_backend="gloo" if distributed and not cuda else None,
        ddp_find_unused_parameters=False, dataloader_num_workers=tc.num_workers, remove_unused_columns=False,
    )  # the sampling strategy follows the training examples (make_trainer)
    tc.threads = set_threads(tc.threads, cuda)  # after the arguments: accelerate sets its own default for CPU
    return args  # processes; the count used is saved with the config


def run_seed(cfg) -> int:
    """The seed of the weights, the examples' order and dropout: --tiger.init_seed, or --seed."""
    return cfg.seed if cfg.tiger.init_seed < 0 else cfg.tiger.init_seed


def set_threads(threads: int, cuda: bool) -> int:
    """torch's CPU threads: `threads`, or 0 = torch's default for this machine (never chosen by how busy the machine
    is: the thread count changes the order of float sums, so the weights). Returns the count in use."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def make_trainer(model, tok, args, train_features, val_features, patience: int, smoothing: float = 0.0,
                 ranking=None):
    """A Seq2SeqTrainer whose training batches group playlists of similar target length (little padding; the
    tuples objective, all one length, gets the Trainer's seeded shuffle, or batches of one input length with
    --tiger.group_titles). Extended through public hooks only: the dataset's order and `set_epoch`,
    `compute_loss_func`, callbacks. `ranking`: a val_ranking.ClusterNDCG, which adds its metric before early
    stopping reads the metrics."""
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, Seq2SeqTrainer

    if train_features.length_grouped:
        train_features.group_by_length(args.train_batch_size * args.gradient_accumulation_steps)
    # sequential: the dataset's own seeded, length-grouped order; random: the Trainer's seeded shuffle
    args.train_sampling_strategy = "sequential" if train_features.length_grouped else "random"
    if args.device.type == "cpu":
        use_fast_cpu_dropout(model)
    collator = DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100)
    if train_features.per_pass > 1:
        from .title_pass import TitlePassCollator

        # batch_size counts entries: a step takes as many titles as hold that many entries on average
        per_title = train_features.entries / max(len(train_features), 1)
        args.per_device_train_batch_size = max(1, round(args.per_device_train_batch_size / per_title))
        collator = TitlePassCollator(collator, tok.pad_token_id, model.config.decoder_start_token_id)
    if getattr(model.config, "e5_prefix", 0):
        from .e5_prefix import E5Collator

        collator = E5Collator(collator)
    return Seq2SeqTrainer(model=model, args=args, train_dataset=train_features, eval_dataset=val_features,
                          data_collator=collator, processing_class=tok,
                          compute_loss_func=functools.partial(token_mean_loss, smoothing=smoothing),
                          callbacks=[*filter(None, [ranking]), EarlyStoppingCallback(early_stopping_patience=patience)])


def final_meta(tc, corpus_meta: dict, id_meta: dict, **extra) -> dict:
    """tiger_meta.json: what generation needs to rebuild inputs and parse outputs."""
    return {"objective": tc.objective,
        "semantic_ids": {k: id_meta[k] for k in ("method", "levels", "codebook_sizes", "dim")},
        **{k: corpus_meta[k] for k in ("token_scheme", "levels", "codebook_sizes", "max_songs", "extra_columns",
                                        "order")},
        "max_source_len": tc.max_source_len, "max_target_len": corpus_meta["max_songs"] * corpus_meta["levels"] + 1,
        "model_name": tc.model_name, **extra,
    }


def summary(trainer, val_loss: float, blind: float, seconds: float, resumed_from, n_train: int, n_val: int) -> dict:
    state = trainer.state
    return {
        "val_loss": val_loss, "title_blind_loss": blind, "steps": state.global_step, "epochs": state.epoch,
        "best_step": state.best_global_step, "train_seconds": seconds,
        "selected_by": (metric := trainer.args.metric_for_best_model), f"best_{metric}": state.best_metric,
        "resumed_from_step": resumed_from, "train_playlists": n_train, "val_playlists": n_val,
        "world_size": trainer.args.world_size, "device": str(trainer.args.device),
        "precision": "bf16" if trainer.args.bf16 else "fp32", "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
    }
