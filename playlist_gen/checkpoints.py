"""Stage 3's checkpoint policy: what a resume must share with the run it continues (the fingerprint), which
checkpoint folder may be cleared, which checkpoint is complete, and the tokenizer every rank shares."""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch

from config import RUN_INFO_FILE

from .io import PipelineError, read_json, write_json

log = logging.getLogger(__name__)

ARCH_FIELDS = ("model_name", "sp_vocab_size", "lowercase", "cjk_chars", "d_model", "d_ff", "num_layers",
               "num_decoder_layers", "num_heads", "d_kv", "feed_forward_proj", "tie_embeddings", "max_source_len",
               "objective", "tuples_per_pass", "set_size", "sets_per_playlist", "max_target_songs", "index_pairs",
               "input_dropout", "extra_dropout", "e5_prefix", "tags_as_titles")
RUN_FIELDS = ("lr", "lr_scheduler", "weight_decay", "warmup_ratio", "epochs", "max_steps", "batch_size", "grad_clip",
              "dropout", "label_smoothing", "eval_steps", "val_playlists", "save_steps", "early_stopping_patience",
              "precision", "init_seed", "select_by", "group_titles")  # the schedule and steps


def fingerprint(tc, corpus_meta: dict, trained_on: dict | None = None, seed: int | None = None) -> dict:
    """What checkpoints must share with the current run to be resumed: the corpus (its manifest id, so a corpus
    rebuilt from new semantic IDs of the same sizes counts as another one), the model's shape, the options that
    shape the run (learning rate, schedule, batch size...) and the seed: a resume continues the same run, so what
    train_summary.json and the saved config record is what ran."""
    corpus_hash = hashlib.sha256(json.dumps(corpus_meta, sort_keys=True).encode()).hexdigest()[:16]
    return {"corpus": corpus_hash, **(trained_on or {}), **{k: getattr(tc, k) for k in ARCH_FIELDS + RUN_FIELDS},
            "seed": seed}


def differences(old: dict, new: dict) -> str:
    """`tiger.lr 0.002 -> 0.02, seed 42 -> 7`: the options two fingerprints disagree on (corpus and IDs by name)."""
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
    names = {"corpus": "the corpus", "semantic_ids": "the semantic IDs", "seed": "seed"}
    return ", ".join(names.get(k, f"tiger.{k}") + ("" if k in ("corpus", "semantic_ids") else
                                                    f" {old.get(k, 'unset')} -> {new.get(k)}") for k in keys)


def complete_checkpoint(ckpt_dir) -> Path | None:
    """The newest checkpoint-N folder that was fully written (trainer_state.json is saved last)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    ckpt_dir = Path(ckpt_dir)
    found = []
    for p in ckpt_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = p.name.rsplit("-", 1)[-1]
        if step.isdigit() and (p / "trainer_state.json").exists():
            found.append((int(step), p))
    return max(found)[1] if found else None


CHECKPOINT_PARTS = ("checkpoint-*", "tokenizer", RUN_INFO_FILE)  # what train_tiger.py puts in the checkpoint folder


def clear_checkpoints(ckpt_dir: Path) -> None:
    """Delete what train_tiger.py wrote in the checkpoint folder (marked by RUN_INFO_FILE); anything else stays."""
    log.info("starting over: removing the checkpoints in %s", ckpt_dir)
    for pattern in CHECKPOINT_PARTS:
        for p in ckpt_dir.glob(pattern):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def prepare_checkpoint_dir(ckpt_dir, fp: dict, resume: bool) -> Path | None:
    """Rank 0: the checkpoint to resume from (or None), after checking it was made for this run.

    Only a folder train_tiger.py made (it holds RUN_INFO_FILE) is ever cleared, and only of what it wrote there: when
    it holds no complete checkpoint of this corpus/config, or with resume=false. Incomplete checkpoints (a run
    killed while saving) are deleted so the Trainer never picks one."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(ckpt_dir)
    info_path = ckpt_dir / RUN_INFO_FILE
    if ckpt_dir.is_dir() and any(ckpt_dir.iterdir()) and not info_path.exists():
        raise PipelineError(f"{ckpt_dir} holds files train_tiger.py did not write (no {RUN_INFO_FILE}); move them, or "
                            "choose another --model_dir")
    old = with_defaults(read_json(info_path, "delete it and train again"), fp) if info_path.exists() else None
    last = complete_checkpoint(ckpt_dir) if ckpt_dir.exists() else None
    if resume and last is not None and old != fp:
        raise PipelineError(f"{ckpt_dir} holds checkpoints of another run ({differences(old or {}, fp)}): re-run "
                            "with that run's options to resume it, or pass --tiger.resume=false to start over (it "
                            "deletes them)")
    if old is not None and (not resume or old != fp):
        clear_checkpoints(ckpt_dir)
        last = None
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json(info_path, fp)
    while (newest := get_last_checkpoint(str(ckpt_dir))) and Path(newest) != last:
        log.warning("removing incomplete checkpoint %s (interrupted while saving)", newest)
        shutil.rmtree(newest)
    if last is not None:
        check_checkpoint(last)
    return last


def with_defaults(old: dict, fp: dict) -> dict:
    """A fingerprint written before an option existed: the run had that option's default (a resume of it with the
    default is the same run)."""
    from config import TigerConfig

    defaults = TigerConfig()
    return {**{k: getattr(defaults, k) for k in fp if k not in old and hasattr(defaults, k)}, **old}


def check_checkpoint(ckpt: Path) -> None:
    """Read every file of the checkpoint to resume from, so a damaged one is named here, not deep in the Trainer."""
    for f in sorted(p for p in Path(ckpt).rglob("*") if p.is_file()):
        try:
            if f.suffix == ".json":
                json.loads(f.read_text(encoding="utf-8"))
            elif f.suffix == ".safetensors":
                from safetensors.torch import load_file

                load_file(f)
            elif f.suffix in (".pt", ".pth", ".bin"):
                torch.load(f, map_location="cpu", weights_only=False)  # the Trainer loads it next anyway
        except Exception as e:  # any reader's error means the same: the file cannot be used
            raise PipelineError(f"{f} is damaged ({type(e).__name__}); delete {ckpt} to resume from an earlier "
                                "checkpoint, or pass --tiger.resume=false to start over") from None


def shared_tokenizer(cfg, args, train_texts, semantic: list[str], fp: dict):
    """Rank 0 prepares the checkpoint folder and builds (or keeps) the tokenizer there; every rank then
    loads that same saved tokenizer. Returns (tokenizer, checkpoint to resume from or None)."""
    from transformers import AutoTokenizer

    from .modeling import build_tokenizer, check_tokenizer

    tok_dir = Path(cfg.checkpoint_dir) / "tokenizer"
    with args.main_process_first(desc="checkpoint folder and tokenizer"):
        if args.process_index == 0:
            last = prepare_checkpoint_dir(cfg.checkpoint_dir, fp, cfg.tiger.resume)
            if not (tok_dir / "tokenizer_config.json").exists():
                build_tokenizer(cfg.tiger, train_texts, semantic, cfg.seed).save_pretrained(tok_dir)
        else:
            last = complete_checkpoint(cfg.checkpoint_dir)
        try:
            tok = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        except Exception as e:  # a damaged tokenizer file fails in one of several readers
            raise PipelineError(f"{tok_dir} is damaged ({type(e).__name__}); pass --tiger.resume=false to start "
                                "over") from None
    check_tokenizer(tok, semantic)
    return tok, last
