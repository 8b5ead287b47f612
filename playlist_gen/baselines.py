"""Baselines evaluated beside the model on the same split: popularity, title kNN, random clusters.

Each returns a ranked song list for a title; the cluster metrics use the clusters of those songs.
"""

import numpy as np


class Popularity:
    """The most frequent songs of the training playlists, the same list for every title."""

    def __init__(self, train_counts: dict[str, int]):
        self.ranked = sorted(train_counts, key=lambda s: (-train_counts[s], s))

    def recommend(self, k: int) -> list[str]:
        return self.ranked[:k]


class TitleKNN:
    """TF-IDF over character 2-4-grams of titles; the `neighbors` most similar training playlists
    vote for their songs with their cosine similarity; ties and empty votes fall back to popularity."""

    def __init__(self, titles: list[str], song_lists: list[list[str]], popularity: Popularity, neighbors: int = 50):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(2, 4), lowercase=True)
        self.X = self.vectorizer.fit_transform(titles)
        self.song_lists, self.popularity, self.neighbors = song_lists, popularity, neighbors
        self.rank = {s: i for i, s in enumerate(popularity.ranked)}

    def recommend_many(self, titles: list[str], k: int) -> list[list[str]]:
        sims = (self.vectorizer.transform(titles) @ self.X.T).toarray()
        return [self._vote(row, k) for row in sims]

    def _vote(self, sims: np.ndarray, k: int) -> list[str]:
        n = min(self.neighbors, len(sims))
        top = np.argpartition(-sims, n - 1)[:n]
        votes = {}
        for i in top:
            if sims[i] <= 0:
                continue
            for s in dict.fromkeys(self.song_lists[i]):
                votes[s] = votes.get(s, 0.0) + float(sims[i])
        ranked = sorted(votes, key=lambda s: (-votes[s], self.rank.get(s, len(self.rank)), s))[:k]
        if len(ranked) < k:
            seen = set(ranked)
            ranked += [s for s in self.popularity.recommend(k + len(seen)) if s not in seen][:k - len(ranked)]
        return ranked


def random_clusters(clusters: list[tuple], n: int, rng) -> list[tuple]:
    """`n` distinct real clusters drawn uniformly (all of them when there are fewer)."""
    idx = rng.choice(len(clusters), size=min(n, len(clusters)), replace=False)
    return [clusters[i] for i in idx]
