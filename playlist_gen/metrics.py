"""Evaluation metrics: semantic-ID sequences, cluster expansion, and song-level ranking.

Sequence metrics treat each semantic-ID token (`<a_12>`) as one unit. rouge_score's default
tokenizer would turn `<id_12>` into the two words `id 12`, so ROUGE-L is computed with a
whitespace tokenizer. Song-level metrics follow the RecSys Challenge 2018: R-precision,
NDCG@K with the 1/log2(rank + 1) discount (the challenge's reference code), Recall@K.
"""

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np


class WhitespaceTokenizer:
    """For rouge_score: one semantic-ID token is one unit."""

    def tokenize(self, text):
        return text.split() if isinstance(text, str) else list(text)


def rouge_l(hyp_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
    """ROUGE-L F1 with each token as one unit: rouge_score's F-measure of the longest common subsequence, its length
    found bit-parallel (rouge_score fills the whole table in Python: 6 ms for 100 x 66 tokens, a third of an
    evaluation's time; tests/test_metrics.py checks both agree)."""
    if not hyp_tokens or not ref_tokens:
        return 0.0
    from rouge_score.scoring import fmeasure

    lcs = lcs_length(ref_tokens, hyp_tokens)
    return fmeasure(lcs / len(hyp_tokens), lcs / len(ref_tokens))


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (Allison-Dix / Hyyro bit-parallel: one row of the table per word)."""
    masks: dict = {}
    for i, x in enumerate(a):
        masks[x] = masks.get(x, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for y in b:
        u = v & masks.get(y, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def bleu4(hyp_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
    """Sentence BLEU-4 against one reference: nltk's `sentence_bleu` with uniform weights and smoothing method 1
    (a zero n-gram count becomes 0.1), counted with Counters instead of nltk's Fractions (4 ms a call there, a
    quarter of a small evaluation; tests/test_metrics.py checks both agree)."""
    if not hyp_tokens or not ref_tokens:
        return 0.0
    logs = []
    for n in range(1, 5):
        hyp = Counter(zip(*(hyp_tokens[i:] for i in range(n))))
        ref = Counter(zip(*(ref_tokens[i:] for i in range(n))))
        matches = sum(min(count, ref[gram]) for gram, count in hyp.items())
        if n == 1 and matches == 0:
            return 0.0
        total = max(1, len(hyp_tokens) - n + 1)
        logs.append(0.25 * math.log(matches / total if matches else 0.1 / total))
    brevity = 1.0 if len(hyp_tokens) > len(ref_tokens) else math.exp(1 - len(ref_tokens) / len(hyp_tokens))
    return brevity * math.exp(math.fsum(logs))


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def tuple_f1(gen: Iterable[tuple], ref: Iterable[tuple]) -> float:
    """F1 over the sets of semantic-ID tuples."""
    gen, ref = set(gen), set(ref)
    if not gen or not ref:
        return 0.0
    hit = len(gen & ref)
    return f1(hit / len(gen), hit / len(ref))


def cluster_expansion(gen_clusters: Iterable[tuple], real_songs: Iterable[str],
                      cluster_songs: dict[tuple, Sequence[str]]) -> dict[str, float]:
    """Expand generated clusters to every song in them and compare with the real songs.

    precision = real songs covered / songs the clusters expand to; recall = real songs covered /
    real songs; `expanded_songs` is the expansion size, so one giant cluster cannot look perfect.
    """
    expanded = set()
    for c in set(gen_clusters):
        expanded.update(cluster_songs.get(c, ()))
    real = set(real_songs)
    hit = len(expanded & real)
    p = hit / len(expanded) if expanded else 0.0
    r = hit / len(real) if real else 0.0
    return {"cluster_precision": p, "cluster_recall": r, "cluster_f1": f1(p, r), "expanded_songs": len(expanded)}


def _dedupe(ranked: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ranked))


def r_precision(ranked: Sequence[str], truth: Iterable[str]) -> float:
    """Relevant songs among the first |truth| recommendations, over |truth|."""
    truth = set(truth)
    if not truth:
        return 0.0
    return len(truth.intersection(_dedupe(ranked)[:len(truth)])) / len(truth)


def ndcg_at_k(ranked: Sequence[str], truth: Iterable[str], k: int) -> float:
    truth = set(truth)
    if not truth:
        return 0.0
    ranked = _dedupe(ranked)[:k]
    dcg = sum(1.0 / math.log2(i + 2) for i, s in enumerate(ranked) if s in truth)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(truth), k)))
    return dcg / idcg


def recall_at_k(ranked: Sequence[str], truth: Iterable[str], k: int) -> float:
    truth = set(truth)
    if not truth:
        return 0.0
    return len(truth.intersection(_dedupe(ranked)[:k])) / len(truth)


def song_metrics(ranked: Sequence[str], truth: Iterable[str], k: int) -> dict[str, float]:
    truth = set(truth)
    return {"r_precision": r_precision(ranked, truth), f"ndcg@{k}": ndcg_at_k(ranked, truth, k),
            f"recall@{k}": recall_at_k(ranked, truth, k)}


def sequence_metrics(gen_tokens: Sequence[str], ref_tokens: Sequence[str],
                     gen_tuples: Sequence[tuple], ref_tuples: Sequence[tuple]) -> dict[str, float]:
    return {"rouge_l": rouge_l(gen_tokens, ref_tokens), "bleu4": bleu4(gen_tokens, ref_tokens),
            "tuple_f1": tuple_f1(gen_tuples, ref_tuples)}


def mean_table(rows: Sequence[dict]) -> dict[str, float]:
    """Average each numeric key over playlists (keys missing from a row are skipped for that row)."""
    keys = list(dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, int | float)))
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def playlist_scores(gen_tuples, ranked, ref_tuples, truth, index, k: int, scheme: str, n_songs: int,
                    artist_of) -> dict[str, float]:
    """Every per-playlist metric of one method's output.

    gen_tuples: the generated cluster sequence (invalid tuples included); ranked: its song ranking;
    ref_tuples: the reference target; truth: every song of the real playlist; index: a SongIndex.
    Cluster expansion compares with the real songs that have semantic IDs (the only songs a
    cluster can contain); the song-level metrics with all of them.
    """
    from .tokens import encode

    valid = [t for t in gen_tuples if t in index.cluster_songs]
    out = sequence_metrics(encode(gen_tuples, scheme).split(), encode(ref_tuples, scheme).split(),
                           gen_tuples, ref_tuples)
    out.update(cluster_expansion(valid, [s for s in truth if s in index.song_cluster], index.cluster_songs))
    out.update(song_metrics(ranked, truth, k))
    if gen_tuples:
        out["validity"] = len(valid) / len(gen_tuples)
    playlist = list(dict.fromkeys(ranked))[:n_songs]
    out["distinct_clusters"] = len(set(valid))
    out["distinct_artists"] = len({artist_of(s) for s in playlist})
    out["songs"] = len(playlist)
    return out


def coverage(ranked_lists, catalogue: set) -> float:
    """Share of the catalogue that appears in at least one recommendation list."""
    seen = {s for r in ranked_lists for s in r}
    return len(seen & catalogue) / len(catalogue) if catalogue else 0.0


def shown_scores(shown: Sequence[str], truth: Iterable[str], n: int, artist_of, cluster_of, pop_rank) -> dict:
    """The shown playlist (what generate_playlist.py prints, n songs asked for) against the real playlist:
    precision@n (hits / n), NDCG@n, recall@n; beside them its diversity: distinct artists and clusters, and the
    mean popularity rank of its songs (0 = the most frequent training song)."""
    truth = set(truth)
    shown = list(dict.fromkeys(shown))[:n]
    return {f"shown_precision@{n}": len(truth.intersection(shown)) / n, f"shown_ndcg@{n}": ndcg_at_k(shown, truth, n),
            f"shown_recall@{n}": recall_at_k(shown, truth, n),
            "shown_artists": len({artist_of(s) for s in shown}),
            "shown_clusters": len({c for c in map(cluster_of, shown) if c is not None}),
            "shown_popularity_rank": float(np.mean([pop_rank(s) for s in shown])) if shown else 0.0}


def overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of the songs two playlists of the same request have in common (1 = no variety)."""
    return len(set(a) & set(b)) / max(len(a), len(b), 1)
