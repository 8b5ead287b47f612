"""Title -> clusters: the trained model, decoding constrained to real semantic-ID clusters.

`ClusterTrie` holds the prefix trie of the semantic-ID tuples that exist as tensors;
`TrieLogitsProcessor` masks the logits of a whole batch per step (beam search or sampling), so
every generated tuple is a real cluster, EOS comes only at a tuple boundary once the target
number of songs is reached, and (optionally) no cluster repeats within a row. The processor is
stateless: each step it re-reads the row's tokens (rows are reordered by beam search), which
costs a few small tensor operations per step.

`PlaylistGenerator.cluster_log_probs` scores every cluster exactly (t5_runtime.tuple_log_probs);
`generate` decodes a sequence of clusters (beam search or sampling). Clusters -> songs is
playlist_gen.catalogue's part.
"""

import logging
from collections import OrderedDict
from itertools import chain

import numpy as np

from . import tokens as tok
from .io import PipelineError

log = logging.getLogger(__name__)

MODES = ("beam", "sample")


def level_token_ids(tokenizer, codebook_sizes, scheme: str) -> list[list[int]]:
    """Per level, the token ids of codes 0..K-1 in `tokenizer` (transformers' or t5_runtime's)."""
    ids = [tokenizer.convert_tokens_to_ids([tok.token(lvl, c, scheme) for c in range(k)])
           for lvl, k in enumerate(codebook_sizes)]
    flat = [i for level in ids for i in level]
    if None in flat or tokenizer.unk_token_id in flat:
        raise PipelineError("the model's tokenizer lacks semantic-ID tokens for these IDs; "
                            "re-run `python prepare_corpus.py` and `python train_tiger.py`")
    return ids


SCORED_ROWS = 1 << 15  # decoder rows per scoring step at most (texts x trie nodes at the widest depth)


class ClusterTrie:
    """Prefix trie of the existing tuples. Nodes are numbered depth by depth (root = 0)."""

    def __init__(self, clusters, codebook_sizes):
        import torch

        self.levels, self.width = len(codebook_sizes), max(codebook_sizes)
        clusters = [c if type(c) is tuple else tuple(c) for c in clusters]
        if not clusters or set(map(len, clusters)) != {self.levels}:
            raise PipelineError(f"semantic IDs: expected non-empty tuples of {self.levels} codes")
        codes = np.fromiter(chain.from_iterable(clusters), dtype=np.int64, count=len(clusters) * self.levels)
        codes = codes.reshape(len(clusters), self.levels)
        step = codes[1:] - codes[:-1]  # the catalogue's clusters come sorted and distinct: kept as they are (at 1M
        if not (step[np.arange(len(step)), (step != 0).argmax(axis=1)] > 0).all():  # playlists sorting took ~1 s)
            codes = np.unique(codes, axis=0)
            clusters = [tuple(c) for c in codes.tolist()]
        # per cluster and depth d, its d-code prefix's node (array work: ~800k clusters at 1M playlists)
        path = np.zeros((len(codes), self.levels + 1), dtype=np.int64)
        sizes = [1]
        for d in range(1, self.levels + 1):
            new = np.ones(len(codes), dtype=bool)
            new[1:] = (codes[1:, :d] != codes[:-1, :d]).any(axis=1)  # rows are sorted: a new prefix starts here
            path[:, d] = sum(sizes) + np.cumsum(new) - 1
            sizes.append(int(new.sum()))
        n_nodes, n_internal = sum(sizes), sum(sizes) - sizes[-1]
        child = np.full((n_internal, self.width), -1, dtype=np.int64)  # node, code -> child node
        anc = np.full((n_nodes, self.levels + 1), -1, dtype=np.int64)  # node, depth -> ancestor
        for d in range(self.levels + 1):
            anc[path[:, d], :d + 1] = path[:, :d + 1]
            if d:
                child[path[:, d - 1], codes[:, d - 1]] = path[:, d]
        leaf_count = np.bincount(path.ravel(), minlength=n_nodes).astype(np.int64)  # clusters below each node
        self.child, self.anc, self.leaf_count = (torch.from_numpy(a) for a in (child, anc, leaf_count))
        self.clusters = clusters  # sorted, distinct
        self.widest = max(sizes[:self.levels])  # most nodes at one depth
        self.first_leaf = n_nodes - len(codes)  # nodes are numbered depth by depth, leaves last, sorted

    def to(self, device):
        for name in ("child", "anc", "leaf_count"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def log_probs(self, runtime, level_tokens: list, ids, mask, e5=None):
        """(texts, clusters) float64 tensor: log P(cluster | text) of every cluster in `clusters` order under the
        runtime's model, exactly (t5_runtime.tuple_log_probs; the trie on the runtime's device)."""
        import torch

        from .t5_runtime import tuple_log_probs

        rows, node, logp = tuple_log_probs(runtime, ids, mask, self.child, level_tokens, e5)
        out = torch.full((ids.shape[0], len(self.clusters)), -torch.inf, dtype=torch.float64, device=ids.device)
        out[rows, node - self.first_leaf] = logp.double()
        return out


class TrieLogitsProcessor:
    """A logits processor for `model.generate(logits_processor=[...])`: only trie continuations, EOS at
    tuple boundaries.

    Rows look like [decoder_start, t1, t2, ...]. `min_tuples`: EOS is blocked before this many
    complete tuples (unless a row has nowhere left to go); `max_tuples`: EOS is forced after.
    """

    def __init__(self, trie: ClusterTrie, token_ids, vocab_size: int, eos_id: int,
                 min_tuples: int = 0, max_tuples: int | None = None, no_repeat: bool = True):
        import torch

        self.trie, self.eos, self.no_repeat = trie, eos_id, no_repeat
        self.min_tuples, self.max_tuples = min_tuples, max_tuples
        self.code_of = torch.full((trie.levels, vocab_size), -1, dtype=torch.long)  # level, token id -> code
        self.tok_ids = []  # per level: token ids of codes 0..K_l-1
        for lvl, ids in enumerate(token_ids):
            ids = torch.as_tensor(ids, dtype=torch.long)
            self.code_of[lvl, ids] = torch.arange(len(ids))
            self.tok_ids.append(ids)
        self.width = trie.width
        self.device = None

    def _to(self, device):
        if self.device != device:
            self.trie.to(device)
            self.code_of = self.code_of.to(device)
            self.tok_ids = [t.to(device) for t in self.tok_ids]
            self.device = device

    def _walk(self, node, toks, dead):
        """Follow tokens `toks` (..., n) of levels 0..n-1 down from `node` (...); `dead` marks leaving the trie."""
        for j in range(toks.shape[-1]):
            code = self.code_of[j, toks[..., j]]
            nxt = self.trie.child[node, code.clamp(min=0)]
            dead = dead | (code < 0) | (nxt < 0)
            node = nxt.clamp(min=0)
        return node, dead

    def _exhausted(self, gen, node, pos: int, n_done: int):
        """(rows, K): codes at level `pos` that lead only to clusters this row already used."""
        import torch

        trie, rows = self.trie, gen.shape[0]
        tup = gen[:, :n_done * trie.levels].reshape(rows, n_done, trie.levels)
        start = torch.zeros((rows, n_done), dtype=torch.long, device=gen.device)
        leaf, bad = self._walk(start, tup, torch.zeros_like(start, dtype=torch.bool))
        under_node = ~bad & (trie.anc[leaf, pos] == node[:, None])  # used clusters below the current prefix
        idx = torch.where(under_node, self.code_of[pos, tup[:, :, pos]], self.width)
        used = torch.zeros((rows, self.width + 1), dtype=torch.long, device=gen.device)
        used.scatter_add_(1, idx, torch.ones_like(idx))
        cand = trie.child[node]
        return (cand >= 0) & (used[:, :-1] >= trie.leaf_count[cand.clamp(min=0)])

    def __call__(self, input_ids, scores):
        import torch

        self._to(scores.device)
        L = self.trie.levels
        gen = input_ids[:, 1:]
        rows, T = gen.shape
        pos, n_done = T % L, T // L
        dead = (gen == self.eos).any(1) if T else torch.zeros(rows, dtype=torch.bool, device=gen.device)
        node, dead = self._walk(torch.zeros(rows, dtype=torch.long, device=gen.device),
                                gen[:, n_done * L:], dead)
        ids = self.tok_ids[pos]
        allowed = self.trie.child[node, :len(ids)] >= 0
        if self.no_repeat and n_done:
            allowed &= ~self._exhausted(gen, node, pos, n_done)[:, :len(ids)]
        if pos == 0 and self.max_tuples is not None and n_done >= self.max_tuples:
            dead = torch.ones_like(dead)
        allowed &= ~dead[:, None]
        end = dead | ~allowed.any(1)  # finished, forced to stop, or nowhere left to go
        if pos == 0 and n_done >= self.min_tuples:
            end = torch.ones_like(end)
        out = torch.full_like(scores, float("-inf"))  # only this level's tokens and EOS can be finite
        out[:, ids] = scores[:, ids].masked_fill(~allowed, float("-inf"))
        out[:, self.eos] = scores[:, self.eos].masked_fill(~end, float("-inf"))
        return out


# ---------------------------------------------------------------- model -> tuples
MEMO = 4  # texts per model whose scores a generator remembers (interactive requests; evaluation's batches are larger)


class PlaylistGenerator:
    """A trained title -> semantic-ID model (t5_runtime: no transformers import) plus the trie of existing clusters."""

    def __init__(self, runtime, tokenizer, meta: dict, clusters, device="cpu"):
        self.runtime, self.tokenizer, self.meta, self.device = runtime, tokenizer, meta, device
        self.levels, self.scheme = int(meta["levels"]), meta.get("token_scheme", "level")
        self.sizes = [int(k) for k in meta["codebook_sizes"]]
        self.max_source_len = int(meta.get("max_source_len", 64))
        self.trie = ClusterTrie(clusters, self.sizes)
        self.token_ids = self.semantic_ids(tokenizer)
        self.eos = tokenizer.eos_token_id
        self.vocab_size = runtime.w["lm_head.weight"].shape[0]
        self.members = [(runtime, tokenizer, self.token_ids)]  # an ensemble's models: cluster_log_probs averages them
        self._memo: OrderedDict = OrderedDict()  # (model, text) -> its log-probabilities (_remembered)

    def semantic_ids(self, tokenizer) -> list[list[int]]:
        """Per level, the token ids of codes 0..K-1 in `tokenizer`."""
        return level_token_ids(tokenizer, self.sizes, self.scheme)

    def add_member(self, runtime, tokenizer) -> None:
        """Another model trained on the same corpus: its distribution over clusters joins the average."""
        self.members.append((runtime, tokenizer, self.semantic_ids(tokenizer)))

    def e5(self, texts: list[str], runtime=None):
        """The texts' e5 embeddings for a model trained with an e5 prefix (playlist_gen.e5_prefix), else None."""
        if not (runtime or self.runtime).e5_prefix:
            return None
        import torch

        from .recommend import embed

        return torch.from_numpy(embed(list(texts))).to(self.device)

    def processor(self, num_songs: int, no_repeat: bool = True) -> TrieLogitsProcessor:
        return TrieLogitsProcessor(self.trie, self.token_ids, self.vocab_size, self.eos,
                                   min_tuples=num_songs, max_tuples=num_songs, no_repeat=no_repeat)

    def processors(self, g, num_songs: int) -> list:
        """Score processors in transformers' order: the trie (or at least num_songs tuples' tokens), then
        for sampling temperature and top-p."""
        from .t5_runtime import min_new_tokens, top_p_warper

        if g.mode not in MODES:
            raise PipelineError(f"unknown generate.mode {g.mode!r}; use one of {MODES}")
        if g.constrained:
            out = [self.processor(num_songs, g.no_repeat_cluster)]
        else:
            out = [min_new_tokens(self.levels * num_songs, self.eos)]
        if g.mode == "sample" and g.temperature != 1.0:
            out.append(lambda _ids, scores: scores / g.temperature)
        if g.mode == "sample" and g.top_p < 1.0:
            out.append(top_p_warper(g.top_p))
        return out

    def cluster_log_probs(self, texts: list[str], batch_size: int = 32, models: int | None = None) -> np.ndarray:
        """(texts, clusters) log P(cluster | text) of every cluster in `trie.clusters` order, exactly (the
        constrained decoder's distribution over whole tuples: t5_runtime.tuple_log_probs); an ensemble's is the mean
        of its models' distributions (of its first `models` only, when given)."""
        logs = [self._remembered(i, member, texts, batch_size) for i, member in enumerate(self.members[:models])]
        if len(logs) == 1:
            return logs[0]
        return np.logaddexp.reduce(np.stack(logs), axis=0) - np.log(len(logs))

    def _remembered(self, i: int, member, texts: list[str], batch_size: int) -> np.ndarray:
        """Model i's log-probabilities of `texts`, the last MEMO texts of small calls remembered: a playlist's
        reasons score its title again under the first model (at 1M playlists a pass over 800k clusters, ~0.25 s)."""
        if len(texts) > MEMO:  # evaluation's batches: nothing to reuse
            return self._cluster_log_probs(*member, texts, batch_size)
        memo = self._memo
        missing = list(dict.fromkeys(t for t in texts if (i, t) not in memo))
        if missing:
            memo.update(zip(((i, t) for t in missing), self._cluster_log_probs(*member, missing, batch_size)))
        out = np.stack([memo[i, t] for t in texts])
        for t in texts:
            memo.move_to_end((i, t))
        while len(memo) > MEMO * len(self.members):
            memo.popitem(last=False)
        return out

    def _cluster_log_probs(self, runtime, tokenizer, token_ids, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        trie = self.trie.to(self.device)
        toks = [torch.as_tensor(t, dtype=torch.long, device=self.device) for t in token_ids]
        out = np.full((len(texts), len(trie.clusters)), -np.inf, dtype=np.float64)
        batch_size = max(1, min(batch_size, SCORED_ROWS // trie.widest))  # song-level IDs: a row per song prefix
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            ids, mask = tokenizer.batch(batch, self.max_source_len, self.device)
            with torch.inference_mode():
                out[start:start + len(batch)] = trie.log_probs(runtime, toks, ids, mask, self.e5(batch, runtime)).cpu()
        return out

    def generate(self, texts: list[str], g, num_songs: int | None = None, seed: int = 0,
                 batch_offset: int = 0) -> list[list[tuple]]:
        """Source texts -> generated tuples per text (invalid ones kept when unconstrained).

        `g` is a GenerateConfig. Batch b (counted from `batch_offset`) is seeded with seed + b, so a
        text's result does not depend on how the work is split across processes.
        """
        import torch

        from .t5_runtime import beam_search, sample

        num_songs = g.num_songs if num_songs is None else num_songs
        procs, max_new = self.processors(g, num_songs), self.levels * num_songs + 1
        out = []
        for b, start in enumerate(range(0, len(texts), g.batch_size)):
            batch = texts[start:start + g.batch_size]
            ids, mask = self.tokenizer.batch(batch, self.max_source_len, self.device)
            e5 = self.e5(batch)
            torch.manual_seed(seed + batch_offset + b)
            with torch.inference_mode():
                if g.mode == "beam":
                    seqs = beam_search(self.runtime, ids, mask, procs, g.num_beams, max_new, e5)
                else:
                    seqs = sample(self.runtime, ids, mask, procs, max_new, e5)
            for row in seqs.tolist():
                out.append(tok.decode(self.tokenizer.convert_ids_to_tokens(row), self.levels, self.scheme))
        return out


# ---------------------------------------------------------------- loading
def require_model(cfg) -> None:
    """Fail before any slow loading when stage 3 has not run."""
    from .io import require_file
    from .modeling import MADE_BY

    require_file(cfg.model_meta_path, f"no trained model in {cfg.final_model_dir}; {MADE_BY}")


def load_generator(cfg, clusters, device: str = "cpu") -> PlaylistGenerator:
    """The trained model of cfg.model_dir, checked against the current semantic IDs."""
    from .modeling import load_tiger_runtime
    from .semantic_ids import read_meta

    runtime, tokenizer, meta = load_tiger_runtime(cfg.final_model_dir, device)
    ids_meta = read_meta(cfg.semantic_meta_path)
    trained_on = meta.get("semantic_ids", ids_meta)
    if any(trained_on.get(k) != ids_meta.get(k) for k in ("method", "levels", "codebook_sizes")):
        raise PipelineError(f"{cfg.final_model_dir} was trained on other semantic IDs ({trained_on.get('method')}, "
                            f"{trained_on.get('codebook_sizes')}) than {cfg.semantic_meta_path} "
                            f"({ids_meta['method']}, {ids_meta['codebook_sizes']}); re-run `python prepare_corpus.py` "
                            "and `python train_tiger.py`")
    generator = PlaylistGenerator(runtime, tokenizer, meta, clusters, device)
    for folder in trained_members(cfg, meta):
        generator.add_member(*load_member(cfg, str(folder), meta, device))
    for path in filter(None, (p.strip() for p in cfg.recommend.ensemble.split(","))):
        generator.add_member(*load_member(cfg, path, meta, device))
    return generator


def trained_members(cfg, meta: dict | None = None) -> list:
    """The tiger_final folders of the other models trained with the main one (--tiger.ensemble), as its
    tiger_meta.json lists them."""
    from pathlib import Path

    from .io import read_json

    if meta is None:
        meta = read_json(cfg.model_meta_path, "re-run `python train_tiger.py`") if cfg.model_meta_path.exists() else {}
    members = meta.get("members", []) if isinstance(meta, dict) else None
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise PipelineError(f"{cfg.model_meta_path} is damaged (its members are not a list of folders); re-run "
                            "`python train_tiger.py`")
    folders = [Path(cfg.model_dir) / rel for rel in members]
    for folder in folders:
        if not folder.is_dir():
            raise PipelineError(f"{cfg.final_model_dir} was trained as an ensemble with {folder}, which is missing; "
                                "re-run `python train_tiger.py` (it trains what is missing)")
    return folders


def member_folder(cfg, path: str):
    """An ensemble model's tiger_final folder: `path` itself, or relative to --model_dir."""
    from pathlib import Path

    folder = Path(path) if Path(path).is_dir() else Path(cfg.model_dir) / path
    if not folder.is_dir():
        raise PipelineError(f"--recommend.ensemble: {path} is not a folder (nor {folder}); give the tiger_final folder "
                            "of another trained model")
    return folder


def load_member(cfg, path: str, meta: dict, device):
    """(runtime, tokenizer) of an ensemble's other model: a tiger_final folder, given as a path or relative to
    --model_dir, trained on the corpus the main model was trained on (its manifest id)."""
    from .modeling import load_tiger_runtime

    folder = member_folder(cfg, path)
    runtime, tokenizer, other = load_tiger_runtime(folder, device)
    corpus = meta.get("trained_on", {}).get("corpus")
    if other.get("trained_on", {}).get("corpus") != corpus or other.get("max_source_len") != meta.get(
            "max_source_len"):
        raise PipelineError(f"--recommend.ensemble: {folder} was trained on another corpus (or input length) than "
                            f"{cfg.final_model_dir}; train it on this corpus, e.g. with another --tiger.init_seed")
    return runtime, tokenizer
