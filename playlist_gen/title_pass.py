"""One encoder pass per title for the tuples objective (`--tiger.tuples_per_pass=K`).

The tuples objective trains one example per playlist entry, title -> that song's tuple, so a playlist of 50 songs
encoded its title 50 times a epoch. Here up to K entries of a playlist share one example: the title is encoded
once, and the decoder scores each of the K tuples on its own (a row per tuple, reading that title's encoder
states), with the same loss per tuple token as K separate examples. Which entries go together is drawn from
(seed, playlist) once (playlist_gen.examples.TargetExamples); the sampler shuffles the groups every epoch.
"""

import torch
from transformers import T5ForConditionalGeneration


class TitlePassT5(T5ForConditionalGeneration):
    """T5 whose forward also takes `owner` (rows,): the batch row (title) each decoder row reads. Without it, T5."""

    def forward(self, input_ids=None, attention_mask=None, owner=None, decoder_input_ids=None, labels=None,
                **kwargs):  # `labels` by name: the Trainer finds a model's label names in its forward's signature
        if owner is None:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                   decoder_input_ids=decoder_input_ids, labels=labels, **kwargs)
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return super().forward(encoder_outputs=(states.index_select(0, owner),),
                               attention_mask=attention_mask.index_select(0, owner),
                               decoder_input_ids=decoder_input_ids, labels=labels, **kwargs)


class TitlePassCollator:
    """Examples whose labels are several tuples (TargetExamples with per_pass > 1) -> titles padded once, every
    tuple a row of `labels` with its `owner` and decoder inputs; other examples go to `base` (validation)."""

    def __init__(self, base, pad_id: int, start_id: int):
        self.base, self.pad_id, self.start_id = base, pad_id, start_id

    def __call__(self, features: list[dict]) -> dict:
        if not features or not isinstance(features[0]["labels"][0], list):
            return self.base(features)
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        rows, owner = [], []
        for b, f in enumerate(features):
            ids[b, :len(f["input_ids"])] = torch.as_tensor(f["input_ids"])
            mask[b, :len(f["input_ids"])] = 1
            rows += f["labels"]
            owner += [b] * len(f["labels"])
        labels = torch.as_tensor(rows, dtype=torch.long)
        start = torch.full((len(rows), 1), self.start_id, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "owner": torch.as_tensor(owner),
                "decoder_input_ids": torch.cat([start, labels[:, :-1]], dim=1)}
