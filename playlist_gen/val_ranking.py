"""Choosing the checkpoint by ranking instead of loss (`--tiger.select_by=ndcg`): at every evaluation, the validation
playlists' NDCG@100 over clusters under the model's exact cluster distribution (t5_runtime.tuple_log_probs, what
generation ranks by), added to the Trainer's metrics as `eval_cluster_ndcg` before early stopping and the best
checkpoint read them. Under torchrun every rank computes the same number (same weights, same playlists)."""

import logging

import numpy as np
import torch
from transformers import TrainerCallback

from .generation import ClusterTrie, level_token_ids
from .metrics import ndcg_at_k
from .t5_runtime import T5Runtime

METRIC = "eval_cluster_ndcg"
log = logging.getLogger(__name__)


class ClusterNDCG(TrainerCallback):
    """`val_features`: examples.TargetExamples of the validation split (inputs, targets as token ids, e5)."""

    def __init__(self, val_features, clusters, codebook_sizes, tok, scheme: str, k: int = 100, batch_size: int = 32):
        self.trie = ClusterTrie(clusters, codebook_sizes)
        ids = level_token_ids(tok, codebook_sizes, scheme)
        self.token_ids = [torch.as_tensor(level, dtype=torch.long) for level in ids]
        code_of = [{t: c for c, t in enumerate(level)} for level in ids]
        self.truth = [{tuple(code_of[lvl][int(t)] for lvl, t in enumerate(row)) for row in target}
                      for target in val_features.targets]
        self.inputs, self.e5, self.pad = val_features.input_ids, val_features.e5, tok.pad_token_id
        self.k, self.batch_size = k, batch_size

    def score(self, model) -> float:
        """Mean NDCG@k of the validation playlists' clusters under `model` (eval-mode forward, no dropout)."""
        device = next(model.parameters()).device
        runtime = T5Runtime(model.config.to_dict(), {k: v.detach() for k, v in model.state_dict().items()}, device)
        trie, toks = self.trie.to(device), [t.to(device) for t in self.token_ids]
        out = []
        with torch.inference_mode():
            for start in range(0, len(self.inputs), self.batch_size):
                rows = self.inputs[start:start + self.batch_size]
                ids = torch.full((len(rows), max(map(len, rows))), self.pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for r, row in enumerate(rows):
                    ids[r, :len(row)], mask[r, :len(row)] = torch.as_tensor(row), 1
                e5 = None if self.e5 is None else torch.from_numpy(self.e5[start:start + len(rows)])
                scores = trie.log_probs(runtime, toks, ids.to(device), mask.to(device), e5)
                top = scores.topk(min(self.k, scores.shape[1]), dim=1).indices.cpu().tolist()
                out += [ndcg_at_k([trie.clusters[i] for i in idx], self.truth[start + r], self.k)
                        for r, idx in enumerate(top)]
        return float(np.mean(out))

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        value = self.score(model)
        metrics[METRIC] = value  # read next by EarlyStoppingCallback and the Trainer's best-checkpoint choice
        if state.log_history and "eval_loss" in state.log_history[-1]:
            state.log_history[-1][METRIC] = value  # beside the loss in the saved trainer state
        log.info("step %s: validation cluster NDCG@%d %.4f", f"{state.global_step:,}", self.k, value)
