"""TF-IDF over character n-grams, as scikit-learn's `TfidfVectorizer(analyzer="char", ngram_range=(2, 4))` computes
it (lower case, runs of whitespace as one space, raw counts, smooth idf ln((1 + n) / (1 + df)) + 1, rows L2
normalised); tests/test_recommend.py checks both give the same similarities.

Written out because importing scikit-learn costs generate_playlist.py about a second of its 3 s budget for the
first playlist, and because both scikit-learn and a Counter per text build the n-grams as Python strings: at the
full MPD's size (900k training titles, 2M song names) that took minutes. Here the n-grams are numbers: every
character gets an id (its rank among the characters seen in fit), an n-gram starting at position i is the rank of
(its (n-1)-gram's rank, its last character) among the n-grams seen in fit, and counting is array work.
"""

import re

import numpy as np

_WHITESPACE = re.compile(r"\s\s+")


def distinct_rows(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """(the distinct texts in order of first appearance, each text's row among them)."""
    where: dict[str, int] = {}
    rows = np.fromiter((where.setdefault(t, len(where)) for t in texts), dtype=np.int64, count=len(texts))
    return list(where), rows


class CharTfidf:
    def __init__(self, ngram_range: tuple[int, int] = (2, 4)):
        self.min_n, self.max_n = ngram_range
        self.chars = np.zeros(0, dtype=np.uint32)  # code points seen in fit, sorted (char id = rank + 1)
        self.grams: list[np.ndarray] = []  # per n = 2..max_n: sorted (prefix rank * base + last char id) seen in fit
        self.offsets: list[int] = []  # per n = min_n..max_n: the first column of its n-grams
        self.idf = np.zeros(0)

    @property
    def n_features(self) -> int:
        return len(self.idf)

    def fit(self, texts: list[str], counts: np.ndarray | None = None) -> "CharTfidf":
        """`counts`: how many documents each text stands for (default 1 each): fit_transform's distinct texts."""
        counts = np.ones(len(texts)) if counts is None else np.asarray(counts, dtype=np.float64)
        chars, ends = _code_points(texts)
        self.chars, self.grams, self.offsets, df = np.unique(chars), [], [], []
        for n, docs, rank in self._occurrences(chars, ends, build=True):
            size = len(self.chars) if n == 1 else len(self.grams[-1])
            self.offsets.append(sum(len(d) for d in df))
            pairs = _unique(docs * (size + 1) + rank)[0]
            df.append(np.bincount(pairs % (size + 1) - 1, weights=counts[pairs // (size + 1)], minlength=size))
        frequency = np.concatenate(df) if df else np.zeros(0)
        self.idf = np.log((1 + counts.sum()) / (1 + frequency)) + 1
        return self

    def fit_distinct(self, texts: list[str], counts: np.ndarray | None = None):
        """fit(texts, counts), then (the distinct texts' rows X, each text's row among them): each distinct text is
        worked on once and kept once (MPD titles repeat: 1M playlists have ~90k distinct titles); X[rows] =
        transform(texts)."""
        distinct, rows = distinct_rows(texts)
        weights = None if counts is None else np.asarray(counts, dtype=np.float64)
        return self.fit(distinct, np.bincount(rows, weights, minlength=len(distinct))).transform(distinct), rows

    def transform(self, texts: list[str], chunk: int = 200_000):
        """(texts, features) float64 CSR; n-grams unseen in fit are ignored."""
        import scipy.sparse as sp

        parts = [self._transform(texts[i:i + chunk]) for i in range(0, len(texts), chunk)]
        if not parts:
            return sp.csr_matrix((0, self.n_features))
        return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")

    def _transform(self, texts: list[str]):
        import scipy.sparse as sp

        keys = [docs * self.n_features + self.offsets[n - self.min_n] + rank - 1
                for n, docs, rank in self._occurrences(*_code_points(texts), build=False)]
        key, tf = _unique(np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64))
        rows, cols = key // max(self.n_features, 1), key % max(self.n_features, 1)
        values = tf * self.idf[cols]
        norm = np.sqrt(np.bincount(rows, weights=values ** 2, minlength=len(texts)))
        values = values / np.where(norm > 0, norm, 1)[rows]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(texts)))])
        return sp.csr_matrix((values, cols, indptr), shape=(len(texts), self.n_features))

    def _occurrences(self, chars: np.ndarray, ends: np.ndarray, build: bool):
        """Per n-gram length n = min_n..max_n: (n, the text of each occurrence of an n-gram fit has seen, that
        n-gram's rank among fit's n-grams of length n, + 1). `build` (fit): this text's n-grams become fit's."""
        lengths = np.diff(ends, prepend=0)
        docs = np.repeat(np.arange(len(lengths)), lengths)
        left = np.repeat(ends, lengths) - np.arange(len(chars))  # characters from here to its text's end
        ids = rank = _rank(self.chars, chars)  # a character's rank + 1 (0: unseen)
        for n in range(1, self.max_n + 1):
            if n > 1:  # the n-gram at i: its (n-1)-gram's rank, then its last character
                valid = (left >= n) & (rank > 0)
                values = rank[valid].astype(np.uint64) * np.uint64(len(self.chars) + 1) + \
                    ids[np.flatnonzero(valid) + n - 1].astype(np.uint64)
                if build:
                    self.grams.append(_unique(values)[0])
                rank = np.zeros(len(chars), dtype=np.int64)
                rank[valid] = _rank(self.grams[n - 2], values)
            if n >= self.min_n:
                hit = (left >= n) & (rank > 0)
                yield n, docs[hit], rank[hit]


def _rank(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each value's rank in the sorted `table` + 1, 0 where the table lacks it."""
    if not len(table):
        return np.zeros(len(x), dtype=np.int64)
    at = np.minimum(np.searchsorted(table, x), len(table) - 1)
    return np.where(table[at] == x, at + 1, 0)


def _code_points(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The normalised texts' characters as one array of code points, and where each text ends in it."""
    normal = [_WHITESPACE.sub(" ", t.lower()) for t in texts]
    ends = np.cumsum([len(t) for t in normal], dtype=np.int64)
    chars = np.frombuffer("".join(normal).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return chars, ends


def _unique(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, their counts): a sort, several times faster here than np.unique's hash table."""
    x = np.sort(x)
    first = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]])) if len(x) else np.zeros(0, dtype=np.int64)
    return x[first], np.diff(np.append(first, len(x)))
