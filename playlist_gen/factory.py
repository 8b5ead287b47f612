"""`load_recommenders`: the recommenders a config names, sharing one catalogue, one loaded model and one
training-playlist song matrix."""

from collections.abc import Sequence

from config import RECOMMENDERS as METHODS

from .catalogue import Catalogue
from .io import PipelineError, read_json
from .recommend import (
    E5KNN,
    CoOccurrence,
    Fusion,
    Popularity,
    RandomClusters,
    T5Recommender,
    TitleKNN,
    voting_members,
)
from .recommender import Recommender


def load_recommenders(cfg, methods: Sequence[str], device: str = "cpu", pick: str = "popular",
                      catalogue: Catalogue | None = None, playlists=None,
                      write_index: bool = True) -> dict[str, Recommender]:
    """The recommenders named in `methods` (of METHODS), sharing one catalogue and one loaded model. `pick`:
    cluster -> song where a method picks one song per cluster (beam/sample decoding, random clusters)."""
    from .catalogue import load_catalogue

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise PipelineError(f"unknown method(s) {unknown}: choose from {', '.join(METHODS)}")
    catalogue = catalogue or load_catalogue(cfg, playlists, write=write_index)
    g, r = cfg.generate, cfg.recommend
    built: dict[str, Recommender] = {}
    shared: dict = {}

    def votes():
        """The catalogue's song matrix with listeners' skips as negative votes, for title kNN and e5 kNN."""
        if "votes" not in shared:
            shared["votes"] = voting_members(catalogue, catalogue.members, r.skip_weight)
        return shared["votes"]

    def get(name: str) -> Recommender:
        if name not in built:
            if name == "model":
                from .generation import load_generator

                generator = load_generator(cfg, catalogue.clusters, device)
                reads_seeds = read_json(cfg.corpus_meta_path, "run `python prepare_corpus.py` first").get(
                    "continuation", 0) > 0
                built[name] = T5Recommender(generator, catalogue, g, g.mode, pick, r.fill_to_k, reads_seeds)
            elif name == "fusion":
                built[name] = Fusion(get("model"), get("title_knn"), catalogue, r.fusion_weight, r.popularity_weight,
                                     r.fusion, r.fusion_floor, get("cooccurrence"), r.seed_weight,
                                     get("e5_knn") if r.e5_weight > 0 else None, r.e5_weight)
            elif name == "e5_knn":
                built[name] = E5KNN(catalogue, r.knn_neighbors, r.knn_text, votes(), r.e5_temperature,
                                    cfg.e5_cache_path, write_index)
            elif name == "title_knn":
                built[name] = TitleKNN(catalogue, r.knn_neighbors, r.knn_text, votes())
            elif name == "popularity":
                built[name] = Popularity(catalogue)
            elif name == "cooccurrence":
                built[name] = CoOccurrence(catalogue)
            elif name == "hstu":
                from .sequential import load_sequential

                built[name] = load_sequential(cfg, catalogue, device)
            else:
                built[name] = RandomClusters(catalogue, pick, r.fill_to_k)
        return built[name]

    return {m: get(m) for m in methods}
