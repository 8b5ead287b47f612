"""Stage 3 training: encoded splits, the Seq2SeqTrainer set-up, resuming, the baseline and the loss curve.

Runs the same on one device and under `torchrun --nproc_per_node=N` (GPUs with NCCL, CPU processes with
gloo): the Trainer owns devices, precision and checkpoints; only rank 0 writes anything else.
"""

import csv
import hashlib
import json
import logging
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from config import OBJECTIVES

from .io import PipelineError, atomic_write, read_json, write_json
from .modeling import EOS
from .text import EXTRA_SEPARATOR

log = logging.getLogger(__name__)

RUN_INFO = "run_info.json"  # in the checkpoint folder: what the checkpoints were trained on
ARCH_FIELDS = ("model_name", "sp_vocab_size", "lowercase", "cjk_chars", "d_model", "d_ff", "num_layers",
               "num_decoder_layers", "num_heads", "d_kv", "feed_forward_proj", "tie_embeddings", "max_source_len",
               "objective", "set_size", "sets_per_playlist", "max_target_songs", "index_pairs", "input_dropout",
               "extra_dropout")


class TargetExamples(torch.utils.data.Dataset):
    """The training (or validation) examples of one split for `tiger.objective`, made on demand:

    - tuples: one example per playlist entry, the input text -> that song's tuple (no </s>). Every entry of every
      playlist trains P(cluster | title), which generation ranks clusters by.
    - sets: `sets_per_playlist` examples per playlist, each a random subset of up to `set_size` of its distinct
      clusters in random order, then </s> (seeded by the example's index: the same in every epoch and on resume).
    - sequence: one example per playlist, its clusters in playlist order (at most `max_songs`), then </s>.
    """

    def __init__(self, input_ids: list[list[int]], targets: list[np.ndarray], objective: str, eos: int, seed: int = 0,
                 set_size: int = 20, sets_per_playlist: int = 8, max_songs: int = 50, input_dropout: float = 0.0,
                 title_ids: list[list[int]] | None = None, extra_dropout: float = 0.0):
        if objective not in OBJECTIVES:
            raise PipelineError(f"--tiger.objective={objective!r}: use one of {', '.join(OBJECTIVES)}")
        self.input_ids, self.targets, self.objective, self.eos, self.seed = input_ids, targets, objective, eos, seed
        self.set_size, self.per_playlist, self.max_songs = set_size, sets_per_playlist, max_songs
        self.input_dropout, self.title_ids, self.extra_dropout = input_dropout, title_ids, extra_dropout
        if objective == "tuples":
            lengths = np.array([len(t) for t in targets], dtype=np.int64)
            self.row_playlist = np.repeat(np.arange(len(targets)), lengths)
            self.row_entry = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)

    def __len__(self) -> int:
        if self.objective == "tuples":
            return len(self.row_playlist)
        return len(self.targets) * (self.per_playlist if self.objective == "sets" else 1)

    def labels(self, i: int) -> tuple[int, list[int]]:
        """(playlist, label token ids) of example i."""
        if self.objective == "tuples":
            p = int(self.row_playlist[i])
            return p, self.targets[p][self.row_entry[i]].tolist()
        if self.objective == "sequence":
            return i, self.targets[i][:self.max_songs].ravel().tolist() + [self.eos]
        p = i // self.per_playlist
        distinct = np.unique(self.targets[p], axis=0)
        rng = np.random.default_rng([self.seed, i])
        chosen = rng.permutation(len(distinct))[:self.set_size]
        return p, distinct[chosen].ravel().tolist() + [self.eos]

    def __getitem__(self, i: int) -> dict:
        p, labels = self.labels(i)
        ids = self.input_ids[p]
        if self.extra_dropout > 0 and np.random.default_rng([self.seed, i, 2]).random() < self.extra_dropout:
            ids = self.title_ids[p]  # the title alone, as a person types it (tags dropped), seeded per example
        if self.input_dropout > 0 and len(ids) > 2:  # drop title tokens (never all, never </s>), seeded per example
            keep = np.random.default_rng([self.seed, i, 1]).random(len(ids) - 1) >= self.input_dropout
            if keep.any():
                ids = [t for t, k in zip(ids[:-1], keep) if k] + ids[-1:]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    def label_lengths(self) -> list[int]:
        """Per example, its number of label tokens (for batching examples of similar length)."""
        if self.objective == "tuples":
            return [self.targets[0].shape[1] if self.targets else 0] * len(self)
        if self.objective == "sequence":
            return [min(len(t), self.max_songs) * t.shape[1] + 1 for t in self.targets]
        return [min(len(np.unique(t, axis=0)), self.set_size) * t.shape[1] + 1
                for t in self.targets for _ in range(self.per_playlist)]


def encode_split(tok, df, tc, levels: int, seed: int, where: str = "split file", train: bool = True) -> TargetExamples:
    """Rows (title, target) -> the examples of `tc.objective`: input ids of the titles, and each target as an
    (entries, levels) array of token ids. `train`: with tc.input_dropout (validation examples keep every token)."""
    input_dropout, extra_dropout = (tc.input_dropout, tc.extra_dropout) if train else (0.0, 0.0)
    enc = tok(list(df["title"]), truncation=True, max_length=tc.max_source_len)["input_ids"]
    title_ids = tok([t.split(EXTRA_SEPARATOR, 1)[0] for t in df["title"]], truncation=True,
                    max_length=tc.max_source_len)["input_ids"] if extra_dropout > 0 else None
    vocab = tok.get_vocab()
    targets = []
    for lineno, target in enumerate(df["target"], 2):
        try:
            ids = [vocab[t] for t in target.split()]
        except KeyError as e:
            raise PipelineError(f"{where}, line {lineno}: target token {e.args[0]!r} is not in the tokenizer; "
                                "re-run `python prepare_corpus.py` after the semantic IDs changed") from None
        targets.append(np.array(ids, dtype=np.int64).reshape(-1, levels))
    return TargetExamples(enc, targets, tc.objective, tok.eos_token_id, seed, tc.set_size, tc.sets_per_playlist,
                          tc.max_target_songs, input_dropout, title_ids, extra_dropout)


def index_rows(cfg, scheme: str):
    """A DataFrame of DSI-style indexing examples, pseudo-playlists beside the training split: a song's `name artist` ->
    its cluster, and each artist -> the clusters of their songs, so the encoder learns the words of the catalogue
    (a title naming an artist or a song). Normalised like titles; songs without a semantic ID are left out."""
    import pandas as pd

    from . import tokens
    from .data import load_song_info
    from .semantic_ids import load_semantic_ids
    from .text import normalize_title

    song_to_ids, _ = load_semantic_ids(cfg)
    info = load_song_info(cfg)
    info = info[info["song_id"].isin(song_to_ids.keys())]
    songs = [(normalize_title(f"{n} {a}"), tokens.encode([song_to_ids[s]], scheme))
             for s, n, a in zip(info["song_id"], info["name"], info["artist"])]
    by_artist = {}
    for s, a in zip(info["song_id"], info["artist"]):
        by_artist.setdefault(normalize_title(a), []).append(song_to_ids[s])
    artists = [(a, tokens.encode(ts, scheme)) for a, ts in by_artist.items() if a]
    rows = [r for r in songs + artists if r[0]]
    log.info("indexing examples: %s songs and %s artists", f"{len(songs):,}", f"{len(artists):,}")
    return pd.DataFrame({"glid": [f"index:{i}" for i in range(len(rows))], "title": [t for t, _ in rows],
                         "target": [g for _, g in rows]})


def title_blind_loss(train_targets, val_targets, semantic: list[str], objective: str = "sequence",
                     levels: int = 2) -> float:
    """The validation loss of a model that ignores titles (nats per target token, add-one smoothed).

    sequence/sets: the training unigram frequencies of the semantic tokens + </s>. tuples: each level's token
    given the tuple's earlier levels, from training counts: the cluster popularity a title must beat."""
    if objective != "tuples":
        counts = Counter(t for target in train_targets for t in target.split())
        counts[EOS] += len(train_targets)
        denominator = sum(counts.values()) + len(semantic) + 1
        total = n = 0
        for target in val_targets:
            for t in target.split() + [EOS]:
                total -= math.log((counts[t] + 1) / denominator)
                n += 1
        return total / max(n, 1)
    per_level = len(semantic) // levels if levels else len(semantic)  # tokens of one level (level scheme)
    prefix, counts = Counter(), Counter()
    for target in train_targets:
        toks = target.split()
        for j in range(0, len(toks), levels):
            for d in range(levels):
                prefix[tuple(toks[j:j + d])] += 1
                counts[tuple(toks[j:j + d + 1])] += 1
    total = n = 0
    for target in val_targets:
        toks = target.split()
        for j in range(0, len(toks), levels):
            for d in range(levels):
                total -= math.log((counts[tuple(toks[j:j + d + 1])] + 1) / (prefix[tuple(toks[j:j + d])] + per_level))
                n += 1
    return total / max(n, 1)


@torch.no_grad()
def token_loss(model, features: TargetExamples, collator, batch_size: int) -> float:
    """Mean cross-entropy per target token (nats), over every target token of `features`."""
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    order = np.argsort(features.label_lengths(), kind="stable").tolist()  # little padding
    for start in range(0, len(order), batch_size):
        batch = collator([features[i] for i in order[start:start + batch_size]])
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**batch).logits.float()
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                                   ignore_index=-100, reduction="sum").item()
        n += int((batch["labels"] != -100).sum())
    return total / max(n, 1)


RUN_FIELDS = ("lr", "lr_scheduler", "weight_decay", "warmup_ratio", "epochs", "max_steps", "batch_size", "grad_clip",
              "dropout", "eval_steps", "save_steps", "early_stopping_patience", "precision")  # the schedule and steps


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


CHECKPOINT_PARTS = ("checkpoint-*", "tokenizer", RUN_INFO)  # what train_tiger.py puts in the checkpoint folder


def clear_checkpoints(ckpt_dir: Path) -> None:
    """Delete what train_tiger.py wrote in the checkpoint folder (marked by RUN_INFO); anything else stays."""
    log.info("starting over: removing the checkpoints in %s", ckpt_dir)
    for pattern in CHECKPOINT_PARTS:
        for p in ckpt_dir.glob(pattern):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def prepare_checkpoint_dir(ckpt_dir, fp: dict, resume: bool) -> Path | None:
    """Rank 0: the checkpoint to resume from (or None), after checking it was made for this run.

    Only a folder train_tiger.py made (it holds RUN_INFO) is ever cleared, and only of what it wrote there: when
    it holds no complete checkpoint of this corpus/config, or with resume=false. Incomplete checkpoints (a run
    killed while saving) are deleted so the Trainer never picks one."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(ckpt_dir)
    info_path = ckpt_dir / RUN_INFO
    if ckpt_dir.is_dir() and any(ckpt_dir.iterdir()) and not info_path.exists():
        raise PipelineError(f"{ckpt_dir} holds files train_tiger.py did not write (no {RUN_INFO}); move them, or "
                            "choose another --model_dir")
    old = read_json(info_path, "delete it and train again") if info_path.exists() else None
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


def loss_rows(log_history: list[dict]) -> list[dict]:
    """Trainer log history -> one row per logged step: step, epoch, train_loss, val_loss (blank if absent)."""
    rows: dict[int, dict] = {}
    for rec in log_history:
        if "loss" in rec or "eval_loss" in rec:
            row = rows.setdefault(rec["step"], {"step": rec["step"], "epoch": rec.get("epoch", ""),
                                                "train_loss": "", "val_loss": ""})
            if "loss" in rec:
                row["train_loss"] = rec["loss"]
            if "eval_loss" in rec:
                row["val_loss"] = rec["eval_loss"]
    return [rows[s] for s in sorted(rows)]


def write_loss_curve(rows: list[dict], csv_path, png_path, title_blind: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_write(csv_path) as f:
        writer = csv.DictWriter(f, fieldnames=["step", "epoch", "train_loss", "val_loss"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        pts = [(r["step"], r[key]) for r in rows if r[key] != ""]
        if pts:
            ax.plot(*zip(*pts), marker="." if key == "val_loss" else None, label=label)
    ax.axhline(title_blind, color="gray", linestyle="--", label="title-blind baseline")
    ax.set(xlabel="step", ylabel="cross-entropy per target token (nats)", title="TIGER training")
    ax.legend()
    fig.tight_layout()
    with atomic_write(png_path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def training_arguments(cfg):
    """Seq2SeqTrainingArguments for this run; creating them sets up torch.distributed under torchrun."""
    from transformers import Seq2SeqTrainingArguments

    tc = cfg.tiger
    cuda = torch.cuda.is_available()
    if tc.precision not in ("auto", "fp32", "bf16"):
        raise PipelineError(f"--tiger.precision={tc.precision!r}: use auto, fp32 or bf16 (fp16 overflows in T5)")
    if tc.eval_steps < 1 or tc.save_steps % tc.eval_steps:
        raise PipelineError(f"--tiger.save_steps={tc.save_steps} must be a multiple of --tiger.eval_steps="
                            f"{tc.eval_steps} (the best checkpoint is chosen at evaluations)")
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # set by torchrun
    args = Seq2SeqTrainingArguments(
        output_dir=str(cfg.checkpoint_dir), seed=cfg.seed, data_seed=cfg.seed, report_to="none",
        per_device_train_batch_size=tc.batch_size, per_device_eval_batch_size=tc.batch_size * 2,
        learning_rate=tc.lr, weight_decay=tc.weight_decay, warmup_steps=tc.warmup_ratio, max_grad_norm=tc.grad_clip,
        num_train_epochs=tc.epochs, max_steps=tc.max_steps, lr_scheduler_type=tc.lr_scheduler,
        eval_strategy="steps", eval_steps=tc.eval_steps, save_strategy="steps", save_steps=tc.save_steps,
        save_total_limit=tc.save_total_limit, load_best_model_at_end=True, metric_for_best_model="eval_loss",
        greater_is_better=False, restore_callback_states_from_checkpoint=True, prediction_loss_only=True,
        logging_strategy="steps", logging_steps=tc.logging_steps, disable_tqdm=False,
        bf16=bf16, use_cpu=not cuda, ddp_backend="gloo" if distributed and not cuda else None,
        ddp_find_unused_parameters=False, dataloader_num_workers=tc.num_workers, remove_unused_columns=False,
    )
    tc.threads = set_threads(tc.threads, cuda)  # after the arguments: accelerate sets its own default for CPU
    return args  # processes; the count used is saved with the config


def set_threads(threads: int, cuda: bool) -> int:
    """torch's CPU threads: `threads`, or 0 = torch's default for this machine (never chosen by how busy the machine
    is: the thread count changes the order of float sums, so the weights). Returns the count in use."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class _LogSoftmaxNLL(torch.autograd.Function):
    """Summed cross-entropy of `logits` (rows x vocabulary) at `labels` (-100 = ignored), as
    cross_entropy(reduction="sum"), with a backward that turns the saved log-probabilities into the gradient in
    place (softmax - one-hot): no zero-filled rows x vocabulary gradient and no separate log-softmax backward
    (measured 46 -> 27 ms per step of 3,232 x 1,901 logits on one CPU thread)."""

    @staticmethod
    def forward(ctx, logits, labels):
        logp = torch.log_softmax(logits, dim=-1)
        keep = (labels != -100).unsqueeze(1)
        index = labels.clamp(min=0).unsqueeze(1)
        ctx.save_for_backward(logp, index, keep)
        return -(logp.gather(1, index) * keep).sum()

    @staticmethod
    def backward(ctx, grad):
        logp, index, keep = ctx.saved_tensors
        row_scale = grad * keep.to(logp.dtype)  # ignored rows get no gradient
        logp.exp_().mul_(row_scale)  # softmax x dloss, reusing the saved buffer (backward runs once)
        return logp.scatter_add_(1, index, -row_scale), None


def token_mean_loss(outputs, labels, num_items_in_batch=None):
    """Cross-entropy summed over target tokens / the batch's target tokens (over all devices when the Trainer
    counts them). T5's own loss is a per-device mean that ignores num_items_in_batch, which the Trainer then
    multiplies by the number of processes; this keeps loss and gradients right under torchrun."""
    logits = outputs["logits"].float().flatten(0, 1)
    labels = labels.flatten()
    if torch.is_grad_enabled() and logits.requires_grad:
        total = _LogSoftmaxNLL.apply(logits, labels)
    else:
        total = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    n = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum()
    return total / n


class _MaskedScale(torch.autograd.Function):
    """x * mask, keeping only the (already scaled) mask for backward."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0], None


def fast_dropout(x, p: float, training: bool = True):
    """Dropout whose CPU masks come from 16-bit slices of 64-bit random words of torch's generator (seeded,
    checkpointed with the Trainer's RNG state): 4 mask entries per draw, where bernoulli_ draws one each and took
    20% of a CPU training step. The drop probability is p rounded to a multiple of 1/65536. Elsewhere (GPU, p
    outside (0, 1), eval) this is torch's own dropout."""
    if not training or not 0 < p < 1 or x.device.type != "cpu":
        return torch.nn.functional.dropout(x, p, training)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None)  # full 64-bit range
    bits = words.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
    mask = (bits >= round(p * 65536) - 32768).to(x.dtype).mul_(1 / (1 - p))
    return _MaskedScale.apply(x, mask)


class FastDropout(torch.nn.Dropout):
    def forward(self, x):
        return fast_dropout(x, self.p, self.training)


def _eager_attention_fast_dropout(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                                  position_bias=None, **kwargs):
    """transformers' T5 eager attention with fast_dropout on the attention probabilities."""
    weights = torch.matmul(query, key.transpose(2, 3)) * (query.size(-1) ** -0.5 if scaling is None else scaling)
    if position_bias is not None:
        weights = weights + position_bias
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = fast_dropout(torch.softmax(weights, dim=-1), dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


FAST_ATTENTION = "tiger_eager_fast_dropout"


def use_fast_cpu_dropout(model) -> None:
    """Training on CPU: every nn.Dropout of `model` becomes FastDropout and attention runs eager with fast_dropout
    (measured 13% less CPU time per step of the default model). Same parameters, same saved model; the attention
    choice is not saved, so a reloaded model uses transformers' default again."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(module, name, FastDropout(child.p))
    if "T5" in type(model).__name__:  # the attention function follows T5's eager attention
        AttentionInterface.register(FAST_ATTENTION, _eager_attention_fast_dropout)
        ALL_MASK_ATTENTION_FUNCTIONS.register(FAST_ATTENTION, eager_mask)
        model.set_attn_implementation(FAST_ATTENTION)


def tied_parameter_names(model) -> set[str]:
    """Names of parameters that are another parameter under a second name (T5's tied embeddings and output layer):
    a checkpoint stores each tensor once, so these are 'missing' from it by design."""
    first, tied = {}, set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(p), name) != name:
            tied.add(name)
    return tied


def make_trainer(model, tok, args, train_features, val_features, patience: int):
    """A Seq2SeqTrainer whose training batches group playlists of similar target length (little padding)."""
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, Seq2SeqTrainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededSampler(LengthGroupedSampler):
        """Length-grouped order drawn from (seed, epoch): a run resumed mid-epoch gets the batches of the
        uninterrupted run. (Unseeded, the order came from the global RNG, whose state at an epoch's start differs
        after a resume.) The Trainer calls set_epoch before each epoch."""

        def __init__(self, batch_size: int, lengths: list[int], seed: int):
            super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            self.generator.manual_seed(self.seed + self.epoch)
            return super().__iter__()

    class TigerTrainer(Seq2SeqTrainer):
        def _get_train_sampler(self, train_dataset=None):
            data = self.train_dataset if train_dataset is None else train_dataset
            if data.objective == "tuples":  # labels all one tuple long: a plain seeded shuffle
                return super()._get_train_sampler(train_dataset)
            lengths = [n * 1024 + len(data.input_ids[data.labels(i)[0]])  # target length first
                       for i, n in enumerate(data.label_lengths())]
            return EpochSeededSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths,
                                      self.args.data_seed if self.args.data_seed is not None else self.args.seed)

        def _issue_warnings_after_load(self, load_result):
            tied = tied_parameter_names(self.model)  # not a problem to warn about at every run's end
            super()._issue_warnings_after_load(
                load_result._replace(missing_keys=[k for k in load_result.missing_keys if k not in tied]))

    if args.device.type == "cpu":
        use_fast_cpu_dropout(model)
    collator = DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100)
    return TigerTrainer(model=model, args=args, train_dataset=train_features, eval_dataset=val_features,
                        data_collator=collator, processing_class=tok, compute_loss_func=token_mean_loss,
                        callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)])


def load_corpus(cfg, reads):
    """(corpus meta, semantic-ID meta, train rows, val rows), checked against their manifests (`reads`, a
    manifest.Reads) and to belong together."""
    import pandas as pd

    from .corpus import SEEDED, read_corpus_meta, read_split
    from .semantic_ids import read_meta

    reads.require("corpus", [cfg.split_path("train"), cfg.split_path("val"), cfg.corpus_meta_path],
                  optional=[cfg.split_path(SEEDED)])
    reads.require("semantic_ids", [cfg.semantic_meta_path])
    corpus_meta = read_corpus_meta(cfg)
    id_meta = read_meta(cfg.semantic_meta_path)
    if [int(k) for k in id_meta["codebook_sizes"]] != corpus_meta["codebook_sizes"]:
        raise PipelineError(f"{cfg.semantic_meta_path} (codebooks {id_meta['codebook_sizes']}) no longer matches "
                            f"{cfg.corpus_meta_path} ({corpus_meta['codebook_sizes']}); "
                            "re-run `python prepare_corpus.py`")
    train_df, val_df = read_split(cfg, "train"), read_split(cfg, "val")
    if corpus_meta.get("continuation"):
        train_df = pd.concat([train_df, read_split(cfg, SEEDED)], ignore_index=True)
    if len(train_df) == 0 or len(val_df) == 0:
        raise PipelineError(f"training needs playlists in both train ({len(train_df):,}) and val ({len(val_df):,}); "
                            "re-run `python prepare_corpus.py` with --corpus.val_fraction > 0")
    return corpus_meta, id_meta, train_df, val_df


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
        "best_step": state.best_global_step, "best_eval_loss": state.best_metric, "train_seconds": seconds,
        "resumed_from_step": resumed_from, "train_playlists": n_train, "val_playlists": n_val,
        "world_size": trainer.args.world_size, "device": str(trainer.args.device),
        "precision": "bf16" if trainer.args.bf16 else "fp32", "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
    }
