import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playlist_gen import metrics


def test_rouge_l_counts_each_semantic_token_once():
    hyp = "<a_1> <b_2> <a_3> <b_4>".split()
    ref = "<a_1> <b_2> <a_5> <b_4>".split()
    assert metrics.rouge_l(hyp, ref) == pytest.approx(0.75)  # LCS 3 of 4 both ways


@settings(max_examples=120, deadline=None)
@given(st.lists(st.sampled_from("abcdefg"), max_size=80), st.lists(st.sampled_from("abcdefgh"), max_size=80))
def test_rouge_l_equals_rouge_score(hyp, ref):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=metrics.WhitespaceTokenizer())
    expected = scorer.score(" ".join(ref), " ".join(hyp))["rougeL"].fmeasure if hyp and ref else 0.0
    assert metrics.rouge_l(hyp, ref) == expected


def test_rouge_default_tokenizer_would_split_tokens():
    from rouge_score import rouge_scorer

    hyp, ref = "<id_12> <id_5>", "<id_12> <id_7>"
    default = rouge_scorer.RougeScorer(["rougeL"]).score(ref, hyp)["rougeL"].fmeasure
    assert default == pytest.approx(0.75)  # "id 12 id 5" vs "id 12 id 7": 3 of 4 words
    assert metrics.rouge_l(hyp.split(), ref.split()) == pytest.approx(0.5)  # 1 of 2 tokens


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcde"), max_size=30), st.lists(st.sampled_from("abcdef"), max_size=30))
def test_bleu4_equals_nltk(hyp, ref):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    expected = sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method1) if hyp and ref else 0.0
    assert metrics.bleu4(hyp, ref) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_bleu4_hand_computed():
    assert metrics.bleu4(list("abcd"), list("abcd")) == pytest.approx(1.0)
    # p1=3/4, p2=2/3, p3=1/2, p4=0 -> smoothed to 0.1/1; equal lengths, no brevity penalty
    expected = (0.75 * (2 / 3) * 0.5 * 0.1) ** 0.25
    assert metrics.bleu4(list("abcd"), list("abce")) == pytest.approx(expected, rel=1e-6)
    assert metrics.bleu4([], list("abc")) == 0.0


def test_tuple_f1():
    assert metrics.tuple_f1([(1, 2), (3, 4), (5, 6), (1, 2)], [(1, 2), (7, 8)]) == pytest.approx(0.4)
    assert metrics.tuple_f1([], [(1, 2)]) == 0.0


def test_cluster_expansion_and_giant_cluster():
    songs = {("A",): ["s1", "s2", "s3"], ("B",): ["s4"], ("C",): ["s5", "s6"]}
    m = metrics.cluster_expansion([("A",), ("B",), ("A",)], ["s1", "s4", "s9"], songs)
    assert m["cluster_precision"] == pytest.approx(0.5)
    assert m["cluster_recall"] == pytest.approx(2 / 3)
    assert m["cluster_f1"] == pytest.approx(4 / 7)
    assert m["expanded_songs"] == 4
    giant = {("G",): [f"s{i}" for i in range(1000)]}
    g = metrics.cluster_expansion([("G",)], ["s1", "s2"], giant)
    assert g["cluster_recall"] == 1.0 and g["cluster_precision"] == pytest.approx(0.002)
    assert g["expanded_songs"] == 1000


def test_song_level_metrics_hand_computed():
    assert metrics.r_precision(["a", "x", "b", "y"], {"a", "b", "c"}) == pytest.approx(2 / 3)
    dcg, idcg = 1 / math.log2(3) + 1 / math.log2(4), 1 + 1 / math.log2(3)
    assert metrics.ndcg_at_k(["x", "a", "b"], {"a", "b"}, 3) == pytest.approx(dcg / idcg)
    assert metrics.ndcg_at_k(["x", "a", "b"], {"a", "b"}, 2) == pytest.approx((1 / math.log2(3)) / idcg)
    assert metrics.ndcg_at_k(["a", "b"], {"a", "b"}, 100) == pytest.approx(1.0)
    assert metrics.recall_at_k(["x", "a", "b"], {"a", "b", "c", "d"}, 2) == pytest.approx(0.25)
    # a repeated recommendation counts once and does not push others down
    assert metrics.recall_at_k(["a", "a", "b"], {"a", "b"}, 2) == 1.0
    assert metrics.song_metrics([], {"a"}, 10) == {"r_precision": 0.0, "ndcg@10": 0.0, "recall@10": 0.0}


def test_mean_table_skips_missing_keys():
    assert metrics.mean_table([{"a": 1.0, "b": 2}, {"a": 3.0, "name": "x"}]) == {"a": 2.0, "b": 2.0}


