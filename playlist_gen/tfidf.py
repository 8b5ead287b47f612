"""TF-IDF over character n-grams, as scikit-learn's `TfidfVectorizer(analyzer="char", ngram_range=(2, 4))` computes
it (lower case, runs of whitespace as one space, raw counts, smooth idf ln((1 + n) / (1 + df)) + 1, rows L2
normalised); tests/test_recommend.py checks both give the same matrix.

Written out because importing scikit-learn costs generate_playlist.py about a second of its 3 s budget for the
first playlist; scipy.sparse, which it needs anyway, costs a fifth of that.
"""

import re
from collections import Counter

import numpy as np

_WHITESPACE = re.compile(r"\s\s+")


class CharTfidf:
    def __init__(self, ngram_range: tuple[int, int] = (2, 4)):
        self.min_n, self.max_n = ngram_range
        self.vocabulary: dict[str, int] = {}
        self.idf = np.zeros(0)

    def grams(self, text: str) -> list[str]:
        text = _WHITESPACE.sub(" ", text.lower())
        return [text[i:i + n] for n in range(self.min_n, min(self.max_n, len(text)) + 1)
                for i in range(len(text) - n + 1)]

    def fit(self, texts: list[str]) -> "CharTfidf":
        df = Counter(g for t in texts for g in set(self.grams(t)))
        self.vocabulary = {g: i for i, g in enumerate(sorted(df))}
        counts = np.array([df[g] for g in sorted(df)], dtype=np.float64)
        self.idf = np.log((1 + len(texts)) / (1 + counts)) + 1
        return self

    def transform(self, texts: list[str]):
        """(texts, vocabulary) float64 CSR; n-grams unseen in fit are ignored."""
        import scipy.sparse as sp

        indptr, indices, values = [0], [], []
        for t in texts:
            tf = Counter(self.vocabulary[g] for g in self.grams(t) if g in self.vocabulary)
            cols = np.fromiter(tf.keys(), dtype=np.int64, count=len(tf))
            vals = np.fromiter(tf.values(), dtype=np.float64, count=len(tf)) * self.idf[cols]
            norm = np.sqrt((vals ** 2).sum())
            indices.append(cols)
            values.append(vals / norm if norm > 0 else vals)
            indptr.append(indptr[-1] + len(tf))
        empty = np.zeros(0)
        return sp.csr_matrix((np.concatenate(values) if values else empty,
                              np.concatenate(indices) if indices else empty.astype(np.int64), indptr),
                             shape=(len(texts), len(self.vocabulary)))
