"""Probe: title kNN over a pretrained multilingual text encoder's embeddings against char n-gram TF-IDF kNN.

    .venv/bin/python -m bench.probe_e5 --data_dir=D --output_dir=O [--eval.split=test]

D/O: a run after prepare_corpus.py. Both kNNs vote with their 50 (recommend.knn_neighbors) nearest training
playlists; e5 weights a neighbour exp((cos - 1) / 0.05). Prints NDCG@100 and R-precision of each on the same
playlists, on the input text with and without the extra columns (tags).
"""

import sys

import numpy as np

TEMPERATURE = 0.05


def main() -> None:
    import evaluate_tiger as ev
    from playlist_gen import metrics
    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.cli import parse_config
    from playlist_gen.data import load_playlists
    from playlist_gen.recommend import E5KNN, Request, TitleKNN

    cfg = parse_config(sys.argv[1:], __doc__)
    playlists = load_playlists(cfg)
    catalogue = load_catalogue(cfg, playlists, write=False)
    test = ev.load_test_playlists(cfg, playlists, catalogue.index)

    def score(votes) -> tuple[float, float]:
        ndcg, rprec = [], []
        for v, p in zip(votes, test):
            songs = [catalogue.songs[i] for i in catalogue.top_songs(v, 100)]
            ndcg.append(metrics.ndcg_at_k(songs, p.truth, 100))
            rprec.append(metrics.r_precision(songs, p.truth))
        return float(np.mean(ndcg)), float(np.mean(rprec))

    for text in ("input", "title"):
        requests = [Request(p.text) for p in test]
        char = score(TitleKNN(catalogue, cfg.recommend.knn_neighbors, text).votes(requests))
        e5 = score(E5KNN(catalogue, cfg.recommend.knn_neighbors, text, temperature=TEMPERATURE).votes(requests))
        print(f"{text:>5} text, {len(test)} {cfg.eval.split} playlists: char n-gram kNN NDCG@100 {char[0]:.4f} "
              f"R-prec {char[1]:.4f} | e5 kNN NDCG@100 {e5[0]:.4f} R-prec {e5[1]:.4f}")


if __name__ == "__main__":
    main()
