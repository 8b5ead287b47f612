"""The one interface every recommender implements, like scikit-learn's estimators or faiss' `DatasetAssign`:
`recommend(requests) -> recommendations`. The T5 model, each baseline and each fused variant (playlist_gen.recommend,
playlist_gen.sequential) implement it; evaluate_tiger.py and generate_playlist.py loop over recommenders and never
branch on which one they hold. playlist_gen.factory builds them from one config.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .catalogue import Catalogue
from .io import PipelineError


@dataclass(frozen=True)
class Request:
    text: str  # the model's input text: normalised title (+ extra columns), as the corpus writes it
    k: int = 100  # songs to rank
    n_clusters: int = 20  # clusters to propose
    seed: int = 0  # randomness of sampling and random picks, per request
    seed_songs: tuple = ()  # songs the playlist starts with (continuation; liked songs): never recommended again
    exclude: frozenset = frozenset()  # songs never to recommend (skipped ones)
    demote: frozenset = frozenset()  # clusters ranked lower (those of skipped songs)


@dataclass
class Recommendation:
    clusters: list[tuple]  # proposed clusters, best (or first generated) first
    songs: list[str]  # ranked songs, best first, at most k
    cluster_scores: list[float] = field(default_factory=list)
    song_scores: list[float] = field(default_factory=list)


DEMOTION = 0.1  # a demoted cluster's songs keep this share of their score


def excluded_codes(catalogue: Catalogue, request: Request) -> list[int]:
    return [catalogue.code[s] for s in (*request.seed_songs, *request.exclude) if s in catalogue.code]


def demoted(catalogue: Catalogue, scores: np.ndarray, request: Request) -> np.ndarray:
    """Scores with the songs of the request's demoted clusters scaled by DEMOTION."""
    if not request.demote:
        return scores
    numbers = sorted(catalogue.cluster_number[c] for c in request.demote if c in catalogue.cluster_number)
    return np.where(np.isin(catalogue.cluster, numbers), scores * DEMOTION, scores)


def from_song_scores(catalogue: Catalogue, scores: np.ndarray, request: Request) -> Recommendation:
    """A recommendation from one score per catalogue song: the top k songs (never a seed or excluded song; demoted
    clusters' songs scaled down), and the clusters they weigh most in."""
    scores = demoted(catalogue, scores, request)
    top = catalogue.top_songs(scores, request.k, excluded_codes(catalogue, request))
    clusters, mass = catalogue.clusters_by_mass(top, scores[top], request.n_clusters)
    return Recommendation(clusters, [catalogue.songs[i] for i in top], mass, scores[top].tolist())


class Recommender:
    """The interface: `recommend(requests) -> one Recommendation per request`."""

    name = "recommender"

    def recommend(self, requests: Sequence[Request]) -> list[Recommendation]:
        raise NotImplementedError

    def prepare(self, texts: Sequence[str]) -> None:
        """Work for requests with these texts that can be done ahead and kept (evaluation knows its test titles)."""

    def song_distributions(self, requests: Sequence[Request]) -> np.ndarray:
        """(requests, catalogue songs) probabilities, for methods that have them (fusion mixes these)."""
        raise PipelineError(f"{self.name} gives no song distribution")

    def cluster_scores(self, requests: Sequence[Request]) -> np.ndarray:
        """(requests, catalogue clusters): how much each cluster holds of the request's song distribution (the CLI
        explains a song by how its cluster's score moves when a title word is left out)."""
        c = self.catalogue
        has = c.cluster >= 0
        return np.stack([np.bincount(c.cluster[has], weights=p[has], minlength=len(c.clusters))
                         for p in self.song_distributions(requests)])
