"""Stage 3's training examples: the corpus splits read and checked, titles and targets encoded, and the dataset
that turns them into the examples of `tiger.objective` (with seeded tag and token dropout)."""

import logging

import numpy as np
import torch

from config import OBJECTIVES

from .io import PipelineError
from .text import EXTRA_SEPARATOR

log = logging.getLogger(__name__)


class TargetExamples(torch.utils.data.Dataset):
    """The training (or validation) examples of one split for `tiger.objective`, made on demand:

    - tuples: one example per playlist entry, the input text -> that song's tuple (no </s>). Every entry of every
      playlist trains P(cluster | title), which generation ranks clusters by. With `per_pass` K > 1 an example is
      up to K entries of one playlist, grouped by a permutation drawn from (seed, playlist), its labels K tuples
      (playlist_gen.title_pass: the title is encoded once for all of them). The groups stay the same every epoch
      (the sampler shuffles the examples), so a resumed run sees the batches of an uninterrupted one.
    - sets: `sets_per_playlist` examples per playlist, each a random subset of up to `set_size` of its distinct
      clusters in random order, then </s> (seeded by the example's index: the same in every epoch and on resume).
    - sequence: one example per playlist, its clusters in playlist order (at most `max_songs`), then </s>.
    """

    def __init__(self, input_ids: list[list[int]], targets: list[np.ndarray], objective: str, eos: int, seed: int = 0,
                 set_size: int = 20, sets_per_playlist: int = 8, max_songs: int = 50, input_dropout: float = 0.0,
                 title_ids: list[list[int]] | None = None, extra_dropout: float = 0.0, per_pass: int = 1,
                 e5: np.ndarray | None = None, title_e5: np.ndarray | None = None,
                 tag_ids: list[list[list[int]]] | None = None, tags_as_titles: float = 0.0, group_titles: bool = False):
        if objective not in OBJECTIVES:
            raise PipelineError(f"--tiger.objective={objective!r}: use one of {', '.join(OBJECTIVES)}")
        self.input_ids, self.targets, self.objective, self.eos, self.seed = input_ids, targets, objective, eos, seed
        self.set_size, self.per_playlist, self.max_songs = set_size, sets_per_playlist, max_songs
        self.input_dropout, self.title_ids, self.extra_dropout = input_dropout, title_ids, extra_dropout
        self.e5, self.title_e5 = e5, title_e5  # per playlist, its input text's and its title's e5 embedding
        self.tag_ids, self.tags_as_titles = tag_ids, tags_as_titles  # per playlist, each extra word's input ids
        self.order = None  # example index -> example served at that position (group_by_length)
        self.group_size = 0
        # served in batches of similar length (make_trainer): every objective but tuples, whose targets are all one
        # length; tuples by input length with --tiger.group_titles
        self.length_grouped = objective != "tuples" or group_titles
        self.per_pass = per_pass if objective == "tuples" else 1
        if objective == "tuples":
            lengths = np.array([len(t) for t in targets], dtype=np.int64)
            self.entries = int(lengths.sum())
            if self.per_pass > 1:
                lengths = -(-lengths // self.per_pass)  # examples per playlist: its entries in groups of per_pass
            self.row_playlist = np.repeat(np.arange(len(targets)), lengths)
            self.row_entry = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)

    def __len__(self) -> int:
        if self.objective == "tuples":
            return len(self.row_playlist)
        return len(self.targets) * (self.per_playlist if self.objective == "sets" else 1)

    def labels(self, i: int) -> tuple[int, list[int]]:
        """(playlist, label token ids) of example i."""
        if self.objective == "tuples":
            p, j = int(self.row_playlist[i]), int(self.row_entry[i])
            if self.per_pass == 1:
                return p, self.targets[p][j].tolist()
            order = np.random.default_rng([self.seed, p]).permutation(len(self.targets[p]))
            return p, self.targets[p][order[j * self.per_pass:(j + 1) * self.per_pass]].tolist()
        if self.objective == "sequence":
            return i, self.targets[i][:self.max_songs].ravel().tolist() + [self.eos]
        p = i // self.per_playlist
        distinct = np.unique(self.targets[p], axis=0)
        rng = np.random.default_rng([self.seed, i])
        chosen = rng.permutation(len(distinct))[:self.set_size]
        return p, distinct[chosen].ravel().tolist() + [self.eos]

    def group_by_length(self, batch_size: int) -> None:
        """Serve the examples in batches of similar target length (little padding), in an order drawn from
        (seed, epoch): a run resumed mid-epoch gets the batches of the uninterrupted run. The Trainer then reads
        positions 0, 1, ... in turn (train_sampling_strategy="sequential"), and accelerate calls `set_epoch` before
        each epoch, on every rank (its public hook for datasets)."""
        self.group_size = batch_size
        self.set_epoch(0)

    def entry_input_lengths(self) -> np.ndarray:
        """objective=tuples: each entry's input length in tokens (its playlist's text, with its tags if any)."""
        per_playlist = np.fromiter(map(len, self.input_ids), dtype=np.int64, count=len(self.input_ids))
        return per_playlist[self.row_playlist]

    def set_epoch(self, epoch: int) -> None:
        if self.group_size:
            from transformers.trainer_pt_utils import get_length_grouped_indices

            if self.objective == "tuples":  # one target length: the input's (the text with its tags, if any)
                lengths = self.entry_input_lengths().tolist()
            else:
                lengths = [n * 1024 + len(self.input_ids[self.labels(i)[0]])  # target length first, then the title's
                           for i, n in enumerate(self.label_lengths())]
            self.order = get_length_grouped_indices(lengths, self.group_size,
                                                    generator=torch.Generator().manual_seed(self.seed + epoch))

    def __getitem__(self, i: int) -> dict:
        if self.order is not None:
            i = self.order[i]
        p, labels = self.labels(i)
        ids, e5 = self.input_ids[p], self.e5
        draw = np.random.default_rng([self.seed, i, 2]).random(2)  # seeded per example: the same on resume
        if self.extra_dropout > 0 and draw[0] < self.extra_dropout:
            ids, e5 = self.title_ids[p], self.title_e5  # the title alone (tags dropped)
        if self.tags_as_titles > 0 and self.tag_ids[p] and draw[1] < self.tags_as_titles:
            ids = self.tag_ids[p][int(draw[1] / self.tags_as_titles * len(self.tag_ids[p]))]  # one tag as the title
        if self.input_dropout > 0 and len(ids) > 2:  # drop title tokens (never all, never </s>), seeded per example
            keep = np.random.default_rng([self.seed, i, 1]).random(len(ids) - 1) >= self.input_dropout
            if keep.any():
                ids = [t for t, k in zip(ids[:-1], keep) if k] + ids[-1:]
        example = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
        if e5 is not None:
            example["e5"] = e5[p]
        return example

    def label_lengths(self) -> list[int]:
        """Per example, its number of label tokens (for batching examples of similar length)."""
        if self.objective == "tuples":
            return [self.targets[0].shape[1] if self.targets else 0] * len(self)
        if self.objective == "sequence":
            return [min(len(t), self.max_songs) * t.shape[1] + 1 for t in self.targets]
        return [min(len(np.unique(t, axis=0)), self.set_size) * t.shape[1] + 1
                for t in self.targets for _ in range(self.per_playlist)]


def encode_split(tok, df, tc, levels: int, seed: int, where: str = "split file", train: bool = True,
                 e5=None) -> TargetExamples:
    """Rows (title, target) -> the examples of `tc.objective`: input ids of the titles, and each target as an
    (entries, levels) array of token ids. `train`: with tc.input_dropout (validation examples keep every token).
    `e5`: texts -> their e5 embeddings, for a model with tc.e5_prefix."""
    input_dropout, extra_dropout = (tc.input_dropout, tc.extra_dropout) if train else (0.0, 0.0)
    enc = tok(list(df["title"]), truncation=True, max_length=tc.max_source_len)["input_ids"]
    titles = [t.split(EXTRA_SEPARATOR, 1)[0] for t in df["title"]]
    title_ids = tok(titles, truncation=True, max_length=tc.max_source_len)["input_ids"] if extra_dropout > 0 else None
    tag_ids = None
    if train and tc.tags_as_titles > 0:
        tags = [t.split(EXTRA_SEPARATOR, 1)[1].replace(EXTRA_SEPARATOR, " ").split() if EXTRA_SEPARATOR in t else []
                for t in df["title"]]
        flat = tok([w for ws in tags for w in ws], truncation=True, max_length=tc.max_source_len)["input_ids"]
        ends = np.cumsum([len(ws) for ws in tags])
        tag_ids = [flat[end - len(ws):end] for ws, end in zip(tags, ends)]
    vectors = (None, None)
    if e5 is not None:  # one call: titles without tags are the same texts, embedded once
        both = e5(list(df["title"]) + titles)
        vectors = (both[:len(titles)], both[len(titles):])
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
                          tc.max_target_songs, input_dropout, title_ids, extra_dropout,
                          tc.tuples_per_pass if train else 1, *vectors, tag_ids, tc.tags_as_titles if train else 0,
                          tc.group_titles and train)


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
    return corpus_meta, id_meta, train_df, sample_rows(val_df, cfg.tiger.val_playlists, cfg.seed)


def sample_rows(df, n: int, seed: int):
    """At most n validation rows (0 = all): a seeded sample, in file order."""
    if n <= 0 or len(df) <= n:
        return df
    keep = np.sort(np.random.default_rng(seed).choice(len(df), n, replace=False))
    log.info("validation: %s of %s playlists, a seeded sample (--tiger.val_playlists=0 keeps all)", f"{n:,}",
             f"{len(df):,}")
    return df.iloc[keep].reset_index(drop=True)
