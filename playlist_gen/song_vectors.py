"""Song vectors from playlist co-occurrence, and a check of how good any song vectors are.

Vectors: the song x playlist matrix (one row per song with at least `min_count` entries), each
playlist column scaled by 1/sqrt(its length) (a playlist of 200 songs says less about each song
than one of 10), then a seeded randomized truncated SVD; a song's vector is its row of
U * S**alpha. This is linear in the number of entries (the whole MPD, 66M entries, fits in a
few GiB), unlike a song x song co-occurrence matrix. Measured on the MPD dev slice (share of
10 nearest neighbours by the same artist, songs with >= 5 entries; random songs: 0.08%):
sqrtlen 17.3%, binary 14.1%, tf-idf 13.2%, BM25 12.6%, PPMI + SVD 11.6% (26x slower,
quadratic), item2vec 21.2% (about 1000x slower: no option at 66M entries on a CPU).
`method` keeps the measured weightings selectable. The SVD is sklearn's randomized range finder
rewritten for scale (see `randomized_svd`); same-artist share on the dev slice by power iterations
(`svd_iter`; seeds 42/1/2): 1: 18.5-18.9%, 2: 18.8-19.1%, 3: 18.3-18.7%, 5: 17.1-17.5%, 8: 16.1-16.5% --
a more exact SVD is not a better one here, and each iteration costs two passes over the matrix.

Quality: for a seeded sample of songs with at least `quality_min_count` entries, the share of
their 10 nearest neighbours (cosine) by the same artist, against 10 random songs.
"""

import logging
import time
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from config import VECTOR_METHODS as METHODS

from .io import PipelineError

log = logging.getLogger(__name__)


def entry_codes(songs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.Index, pd.Index]:
    """(playlist codes, song codes, playlist ids, song ids) of a playlist_id/song_id entry table."""
    def codes(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
        if isinstance(column.dtype, pd.CategoricalDtype):  # the MPD import: int32 codes already, no copy
            return column.cat.codes.to_numpy().astype(np.int32, copy=False), pd.Index(column.cat.categories)
        c, uniques = pd.factorize(column)
        return c.astype(np.int32), pd.Index(uniques)

    (p_codes, p_ids), (s_codes, s_ids) = codes(songs["playlist_id"]), codes(songs["song_id"])
    return p_codes, s_codes, p_ids, s_ids


def song_playlist_matrix(p_codes, s_codes, n_playlists: int, n_songs: int) -> sp.csr_matrix:
    """Songs x playlists, the number of times each song is in each playlist (float32)."""
    data = np.ones(len(s_codes), dtype=np.float32)
    m = sp.csr_matrix((data, (s_codes, p_codes)), shape=(n_songs, n_playlists), dtype=np.float32)
    m.sum_duplicates()
    return m


def sqrtlen_weight(m: sp.csr_matrix) -> sp.csr_matrix:
    """Each playlist column scaled by 1/sqrt(its length): a long playlist says less about each of its songs."""
    lengths = np.asarray(m.sum(axis=0)).ravel()
    return (m @ sp.diags(1.0 / np.sqrt(np.maximum(lengths, 1.0)))).astype(np.float32).tocsr()


def bm25_weight(m: sp.csr_matrix, k1: float = 100.0, b: float = 0.8) -> sp.csr_matrix:
    """BM25 over a songs x playlists matrix: idf per playlist (column), length norm per song (row)."""
    m = m.tocoo()
    n_songs = m.shape[0]
    idf = np.log(n_songs / (1.0 + np.bincount(m.col, minlength=m.shape[1])))
    row_sums = np.asarray(m.sum(axis=1)).ravel()
    length_norm = (1.0 - b) + b * row_sums / row_sums.mean()
    data = m.data * (k1 + 1.0) / (k1 * length_norm[m.row] + m.data) * idf[m.col]
    return sp.csr_matrix((data.astype(np.float32), (m.row, m.col)), shape=m.shape)


def tfidf_weight(m: sp.csr_matrix) -> sp.csr_matrix:
    """log(1 + count) * idf per playlist, rows L2-normalised."""
    m = m.tocsr(copy=True)
    idf = np.log(m.shape[0] / (1.0 + np.bincount(m.indices, minlength=m.shape[1]))).astype(np.float32)
    m.data = np.log1p(m.data) * idf[m.indices]
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ m


def ppmi_matrix(m: sp.csr_matrix, smoothing: float = 0.75) -> sp.csr_matrix:
    """Positive PMI of song x song co-occurrence within playlists (quadratic in playlist length)."""
    b = (m > 0).astype(np.float32)
    c = (b @ b.T).tocoo()
    off = c.row != c.col
    rows, cols, counts = c.row[off], c.col[off], c.data[off]
    row_sums = np.bincount(rows, weights=counts, minlength=m.shape[0])
    ctx = row_sums ** smoothing  # context distribution smoothing (Levy et al. 2015)
    pmi = np.log(counts) - np.log(row_sums[rows]) - np.log(ctx[cols]) + np.log(ctx.sum())
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(m.shape[0],) * 2)


def _orthonormal_columns(Y: np.ndarray, passes: int = 1) -> np.ndarray:
    """Y @ R with orthonormal columns spanning Y's column space, from the eigenvectors of the small Gram matrix
    Y.T @ Y (two GEMMs; 10x cheaper than LU or QR of a tall matrix). One pass keeps a power iteration
    well-conditioned; a second makes the columns orthonormal to float32 precision. Directions of Y
    weaker than 1e-5 of its strongest (rank deficiency) become zero columns."""
    for _ in range(passes):
        lam, V = np.linalg.eigh((Y.T @ Y).astype(np.float64))
        strong = lam > lam[-1] * 1e-10
        Y = Y @ (V * np.where(strong, 1.0 / np.sqrt(np.where(strong, lam, 1.0)), 0.0)).astype(np.float32)
    return Y


def _sparse_products(m: sp.csr_matrix):
    """(Y -> m @ Y, Y -> m.T @ Y) for dense float32 Y, run by torch on all cores (scipy uses one)."""
    import torch  # imported here: the other vector steps do not need it

    def as_torch(c: sp.csr_matrix):
        idx = np.int32 if c.nnz < 2**31 else np.int64
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(torch.from_numpy(c.indptr.astype(idx, copy=False)),
                                           torch.from_numpy(c.indices.astype(idx, copy=False)),
                                           torch.from_numpy(c.data.astype(np.float32, copy=False)), size=c.shape,
                                           check_invariants=False)  # scipy's CSR is valid by construction

    a, a_t = as_torch(m), as_torch(m.T.tocsr())
    return (lambda Y: (a @ torch.from_numpy(Y)).numpy()), (lambda Y: (a_t @ torch.from_numpy(Y)).numpy())


def randomized_svd(m: sp.csr_matrix, k: int, n_iter: int, seed: int, oversample: int = 10):
    """The top k left singular vectors and singular values of m, by the randomized range finder with n_iter
    power iterations that sklearn's randomized_svd uses (Halko et al. 2011), in float32 with cheap
    Gram-matrix normalisation instead of LU/QR/SVD of tall matrices: 1.8x faster on the 100k-playlist
    bench matrix with the cores shared (more on idle ones), same dev-slice quality. Signs: each vector's
    largest entry is positive (seeded and deterministic)."""
    from threadpoolctl import threadpool_limits  # BLAS threads that wait for a busy core stall ~10x

    width = min(k + oversample, *m.shape)
    times, times_t = _sparse_products(m)
    with threadpool_limits(1, user_api="blas"):
        Q = np.random.default_rng(seed).standard_normal((m.shape[1], width), dtype=np.float32)
        for _ in range(n_iter):
            Q = _orthonormal_columns(times_t(_orthonormal_columns(times(Q))))
        Y = _orthonormal_columns(times(Q), passes=2)  # basis of m's top column space (songs side)
        Z = times_t(Y).astype(np.float64)  # m.T @ Y: its Gram matrix is B @ B.T for B = Y.T @ m
        lam, V = np.linalg.eigh(Z.T @ Z)
        order = np.argsort(lam)[::-1][:k]
        U = Y @ V[:, order].astype(np.float32)
    signs = np.sign(U[np.abs(U).argmax(axis=0), np.arange(U.shape[1])])
    return U * np.where(signs == 0, 1, signs).astype(np.float32), np.sqrt(np.maximum(lam[order], 0.0))


def build_song_vectors(songs: pd.DataFrame, vcfg, seed: int) -> tuple[list[str], np.ndarray, dict]:
    """Vectors for the songs with at least `vcfg.min_count` entries: (song ids, float32 vectors, info)."""
    if vcfg.method not in METHODS:
        raise PipelineError(f"--vectors.method={vcfg.method!r}: choose one of {', '.join(METHODS)}")
    start = time.time()
    p_codes, s_codes, p_ids, s_ids = entry_codes(songs)
    counts = np.bincount(s_codes, minlength=len(s_ids))
    kept = np.flatnonzero(counts >= vcfg.min_count)
    dim = min(vcfg.dim, len(kept) - 1)
    if dim < 2:
        raise PipelineError(f"only {len(kept):,} songs appear in at least {vcfg.min_count} playlists; too few "
                            "for song vectors: lower --vectors.min_count or add playlists")
    row_of = np.full(len(s_ids), -1, dtype=np.int64)
    row_of[kept] = np.arange(len(kept))
    mask = row_of[s_codes] >= 0
    m = song_playlist_matrix(p_codes[mask], row_of[s_codes[mask]], len(p_ids), len(kept))
    weight = {"sqrtlen": sqrtlen_weight, "bm25": bm25_weight, "tfidf": tfidf_weight, "binary": lambda x: x,
              "ppmi": ppmi_matrix}[vcfg.method]
    weighted = weight(m)
    dim = min(dim, weighted.shape[1])  # no more directions than the matrix has
    u, s = randomized_svd(weighted, dim, vcfg.svd_iter, seed)
    X = (u * s ** vcfg.alpha).astype(np.float32)
    info = {"method": vcfg.method, "dim": int(dim), "alpha": vcfg.alpha, "min_count": vcfg.min_count,
            "songs_with_vectors": int(len(kept)), "nonzeros": int(weighted.nnz),
            "seconds": round(time.time() - start, 1)}
    log.info("song vectors (%s, dim %d) for %s of %s songs in %.1f s", vcfg.method, dim, f"{len(kept):,}",
             f"{len(s_ids):,}", info["seconds"])
    return s_ids[kept].astype(str).tolist(), X, info


def quality_check(song_ids: list[str], X: np.ndarray, songs: pd.DataFrame, song_info: pd.DataFrame,
                  vcfg, seed: int, k: int = 10) -> dict:
    """Same-artist share of each sampled song's k nearest neighbours (cosine) vs k random songs."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # not "could not load AVX2" on every run
    import faiss  # imported here: only this check needs it

    artist_of = song_info.set_index("song_id")["artist"]
    artists = pd.Index(song_ids).map(artist_of).to_numpy(dtype=object)
    counts = songs["song_id"].value_counts()  # a categorical column (the loaders' output) counts its codes
    occurrences = pd.Index(song_ids).map(counts).fillna(0).to_numpy()
    eligible = np.flatnonzero((occurrences >= vcfg.quality_min_count) & pd.notna(artists) & (artists != ""))
    if len(eligible) == 0 or len(song_ids) <= k:
        return {"songs_checked": 0, "note": f"no songs with >= {vcfg.quality_min_count} entries and an artist"}
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(eligible, size=min(vcfg.quality_sample, len(eligible)), replace=False))
    Xn = np.ascontiguousarray(X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12), dtype=np.float32)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # its OpenMP threads spin and stall 3x when the cores are shared (measured)
    try:
        _, nn = faiss.knn(Xn[sample], Xn, k + 1, metric=faiss.METRIC_INNER_PRODUCT)  # exact; no index copy
    finally:
        faiss.omp_set_num_threads(threads)
    neighbours = np.array([[j for j in row if j != i and j >= 0][:k] for i, row in zip(sample, nn)])
    random = rng.integers(len(song_ids) - 1, size=(len(sample), k))
    random += random >= sample[:, None]  # never the song itself
    knn_share = float((artists[neighbours] == artists[sample, None]).mean())
    random_share = float((artists[random] == artists[sample, None]).mean())
    out = {"songs_checked": int(len(sample)), "k": k, "min_count": vcfg.quality_min_count,
           "knn_same_artist": round(knn_share, 4), "random_same_artist": round(random_share, 4),
           "lift": round(knn_share / random_share, 1) if random_share > 0 else None}
    log.info("vector quality: %.1f%% of %d nearest neighbours share the artist vs %.2f%% of random songs "
             "(%s songs with >= %d entries)", 100 * knn_share, k, 100 * random_share, f"{len(sample):,}",
             vcfg.quality_min_count)
    return out
