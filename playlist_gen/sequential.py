"""A sequential recommender over song ids, the continuation baseline from the HSTU family.

torch-rechub's `HSTUModel` (Hierarchical Sequential Transduction Units, Zhai et al. 2024; it installs cleanly beside
the pinned torch) is trained to predict each next song of the training playlists from the songs before it (full
softmax over the songs seen in at least `hstu.min_count` training playlists; no timestamps in playlists, so no time
embedding). Given a request's seed songs it scores every song as the next one; without seed songs it is popularity.
The trained model is cached in output_dir (`baselines/hstu.pt`) with what it was built from, so evaluation runs
with other settings reuse it.
"""

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from .catalogue import Catalogue
from .io import atomic_write
from .recommender import Recommender, excluded_codes, from_song_scores

log = logging.getLogger(__name__)


def _model(cfg, n_items: int):
    from torch_rechub.models.generative import HSTUModel

    h = cfg.hstu
    return HSTUModel(vocab_size=n_items + 1, d_model=h.d_model, n_heads=h.heads, n_layers=h.layers,
                     dqk=h.d_model // h.heads, dv=h.d_model // h.heads, max_seq_len=h.max_len, dropout=h.dropout,
                     use_time_embedding=False)


def item_codes(catalogue: Catalogue, min_count: int) -> np.ndarray:
    """Catalogue codes of the songs the model knows (item i + 1 is code item_codes[i]; 0 is padding)."""
    return np.flatnonzero(catalogue.counts >= min_count)


def sequences(catalogue: Catalogue, item_of: np.ndarray) -> list[np.ndarray]:
    """Each training playlist as item ids in playlist order, unknown songs left out."""
    out = []
    for songs in catalogue.train_songs:
        items = item_of[[catalogue.code[s] for s in songs]]
        items = items[items > 0]
        if len(items) >= 2:
            out.append(items)
    return out


def fit(cfg, catalogue: Catalogue, device: str):
    h = cfg.hstu
    codes = item_codes(catalogue, h.min_count)
    item_of = np.zeros(len(catalogue.songs), dtype=np.int64)
    item_of[codes] = np.arange(1, len(codes) + 1)
    seqs = sequences(catalogue, item_of)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = _model(cfg, len(codes)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=h.lr, weight_decay=0.01)
    start, steps = time.perf_counter(), 0
    model.train()
    for _ in range(h.epochs):
        for batch in np.array_split(rng.permutation(len(seqs)), max(1, len(seqs) // h.batch_size)):
            x = torch.zeros((len(batch), h.max_len + 1), dtype=torch.long)
            for row, i in enumerate(batch):  # a random window of max_len + 1 songs, left-aligned
                s = seqs[i]
                at = rng.integers(max(1, len(s) - h.max_len))
                window = s[at:at + h.max_len + 1]
                x[row, :len(window)] = torch.from_numpy(window)
            x = x.to(device)
            logits = model(x[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), ignore_index=0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    log.info("hstu: %s songs, %s playlists, %d steps in %.0f s, last loss %.3f", f"{len(codes):,}",
             f"{len(seqs):,}", steps, time.perf_counter() - start, loss.item())
    return model.eval(), codes


class Sequential(Recommender):
    name = "hstu"

    def __init__(self, model, codes: np.ndarray, catalogue: Catalogue, max_len: int, device: str):
        self.model, self.codes, self.catalogue, self.max_len, self.device = model, codes, catalogue, max_len, device
        self.item_of = np.zeros(len(catalogue.songs), dtype=np.int64)
        self.item_of[codes] = np.arange(1, len(codes) + 1)

    @torch.no_grad()
    def song_distributions(self, requests):
        c = self.catalogue
        out = np.tile(c.counts / max(c.counts.sum(), 1.0), (len(requests), 1))
        for i, r in enumerate(requests):
            items = self.item_of[[c.code[s] for s in r.seed_songs if s in c.code]]
            items = items[items > 0][-self.max_len:]
            if len(items):
                logits = self.model(torch.as_tensor(items, device=self.device)[None])[0, -1, 1:]
                out[i] = 0
                out[i, self.codes] = torch.softmax(logits.float(), -1).cpu().numpy()
            out[i, excluded_codes(c, r)] = 0
        return out

    def recommend(self, requests):
        return [from_song_scores(self.catalogue, p, r) for p, r in zip(self.song_distributions(requests), requests)]


def load_sequential(cfg, catalogue: Catalogue, device: str) -> Sequential:
    """The cached model when it was trained on this catalogue with these settings, else train (and cache) it."""
    import dataclasses
    import hashlib
    import io

    key = hashlib.sha256(repr((catalogue.train_texts, catalogue.train_songs, dataclasses.asdict(cfg.hstu),
                               cfg.seed)).encode()).hexdigest()
    path = cfg.hstu_path
    if path.exists():
        saved = torch.load(path, map_location=device, weights_only=False)
        if saved.get("key") == key:
            model = _model(cfg, len(saved["codes"])).to(device)
            model.load_state_dict(saved["state"])
            return Sequential(model.eval(), saved["codes"], catalogue, cfg.hstu.max_len, device)
    model, codes = fit(cfg, catalogue, device)
    buffer = io.BytesIO()
    torch.save({"key": key, "codes": codes, "state": model.state_dict()}, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
    return Sequential(model, codes, catalogue, cfg.hstu.max_len, device)
