"""The shown playlist (playlist_gen.shown): every --pick policy on a hand-made recommendation, and its metrics."""

import numpy as np
import pytest

from playlist_gen import metrics
from playlist_gen.catalogue import Catalogue, SongIndex
from playlist_gen.io import PipelineError
from playlist_gen.recommend import Recommendation
from playlist_gen.shown import ShowPolicy, artist_capped, gumbel_order, show

X, Y, Z = (0, 0), (0, 1), (1, 0)


@pytest.fixture
def cat():
    """Clusters X = {a1, a2, a3} (artist A), Y = {b1, b2} (artist B), Z = {c1} (artist C); u has no cluster."""
    names = {"a1": ("one", "A"), "a2": ("two", "A"), "a3": ("three", "A"), "b1": ("four", "B"), "b2": ("five", "B"),
             "c1": ("six", "C"), "u": ("seven", "D")}
    index = SongIndex({X: ["a1", "a2", "a3"], Y: ["b1", "b2"], Z: ["c1"]},
                      {"a1": 5, "a2": 4, "a3": 3, "b1": 2, "b2": 1, "c1": 1}, names)
    return Catalogue(index, ["t"], [["a1", "a2", "a3", "b1", "b2", "c1", "u"]])


REC = Recommendation([X, Y, Z], ["a1", "a2", "a3", "u", "b1", "b2", "c1"], [1.0, 1.0, 1.0],
                     [0.30, 0.25, 0.20, 0.10, 0.08, 0.05, 0.02])


def songs(cat, pick, n=5, seed=0, used=frozenset(), **kw):
    return [s for s, _ in show(REC, cat, ShowPolicy(pick, n, **kw), np.random.default_rng(seed), used)]


def test_ranked_diverse_and_cluster(cat):
    assert songs(cat, "ranked") == ["a1", "a2", "a3", "u", "b1"]
    assert songs(cat, "diverse") == ["a1", "a2", "u", "b1", "b2"]  # A's third song waits
    assert songs(cat, "diverse", max_per_artist=1) == ["a1", "u", "b1", "c1", "a2"]
    assert songs(cat, "cluster") == ["a1", "u", "b1", "c1", "a2"]  # best song per cluster first
    assert songs(cat, "ranked", used=frozenset({"a1", "u"})) == ["a2", "a3", "b1", "b2", "c1"]
    assert show(REC, cat, ShowPolicy("ranked", 2), None)[0] == ("a1", X)  # the song's cluster comes along


def test_cluster_picks_take_one_song_per_cluster_then_the_ranking(cat):
    assert songs(cat, "popular") == ["a1", "b1", "c1", "a2", "a3"]
    for seed in range(5):
        first3 = songs(cat, "random", seed=seed)[:3]
        assert [cat.index.song_cluster[s] for s in first3] == [X, Y, Z]


def test_sample_is_seeded_varies_and_follows_the_scores(cat):
    assert songs(cat, "sample", seed=3) == songs(cat, "sample", seed=3)
    assert len({tuple(songs(cat, "sample", seed=s, temperature=1.0)) for s in range(20)}) > 5
    assert len({tuple(songs(cat, "sample", seed=s)) for s in range(20)}) > 1  # the default 0.1 varies too
    assert songs(cat, "sample", temperature=1e-3) == songs(cat, "diverse")  # cold: the ranking
    firsts = [songs(cat, "sample", n=1, seed=s, temperature=1.0)[0] for s in range(400)]
    assert firsts.count("a1") > firsts.count("b2") > 0  # weight 0.30 against 0.05


def test_gumbel_order_without_scores_uses_the_rank():
    order = gumbel_order(list("abcd"), [], 1e-3, np.random.default_rng(0))
    assert order == list("abcd")


def test_artist_capped_keeps_unknown_artists():
    artist = {"x": "A", "y": "A", "z": "unknown", "w": "unknown"}.get
    assert artist_capped(["x", "y", "z", "w"], artist, 1) == ["x", "z", "w", "y"]


def test_unknown_policy_is_refused(cat):
    with pytest.raises(PipelineError, match="unknown pick"):
        songs(cat, "best")


def test_shown_scores():
    out = metrics.shown_scores(["a", "b", "c", "a"], {"a", "c", "z"}, 4, {"a": "A", "b": "A", "c": "C"}.get,
                               {"a": X, "b": X}.get, {"a": 0, "b": 10, "c": 20}.get)
    assert out["shown_precision@4"] == 2 / 4  # duplicates count once; precision over the songs asked for
    assert out["shown_recall@4"] == 2 / 3
    assert out["shown_artists"] == 2 and out["shown_clusters"] == 1
    assert out["shown_popularity_rank"] == 10
    assert metrics.overlap(["a", "b"], ["b", "c"]) == 0.5
