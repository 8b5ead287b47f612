"""Song vectors: the randomized SVD against an exact one, and the fast %.6g writer against Python's."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from config import VectorsConfig
from playlist_gen import csv_floats
from playlist_gen.csv_floats import csv_lines, format_cells
from playlist_gen.data import load_song_vectors, write_song_vectors
from playlist_gen.song_vectors import build_song_vectors, randomized_svd


def low_rank_sparse(n_rows: int, n_cols: int, rank: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n_rows, rank)) @ np.diag(2.0 ** -np.arange(rank)) @ rng.standard_normal((rank, n_cols))
    dense[rng.random(dense.shape) < 0.5] = 0.0  # sparse, and no longer of low rank
    return sp.csr_matrix(dense.astype(np.float32))


def test_randomized_svd_matches_exact_svd_and_is_deterministic():
    m = low_rank_sparse(300, 120, 8)
    u, s = randomized_svd(m, 10, n_iter=5, seed=3)
    exact = np.linalg.svd(m.toarray().astype(np.float64), compute_uv=False)[:10]
    np.testing.assert_allclose(s, exact, rtol=1e-3)
    np.testing.assert_allclose(u.T @ u, np.eye(10), atol=1e-4)
    assert u.dtype == np.float32 and (u[np.abs(u).argmax(axis=0), np.arange(10)] > 0).all()  # sign convention
    u2, s2 = randomized_svd(m, 10, n_iter=5, seed=3)
    assert np.array_equal(u, u2) and np.array_equal(s, s2)


def test_randomized_svd_of_a_rank_deficient_matrix_gives_zero_directions_not_nan():
    rng = np.random.default_rng(1)
    m = sp.csr_matrix((rng.standard_normal((50, 3)) @ rng.standard_normal((3, 20))).astype(np.float32))
    u, s = randomized_svd(m, 8, n_iter=3, seed=0)
    assert u.shape == (50, 8) and np.isfinite(u).all()
    assert s[2] > 1e-3 * s[0] and (s[3:] < 1e-3 * s[0]).all()


def test_build_song_vectors_has_no_more_dimensions_than_playlists():
    songs = pd.DataFrame({"playlist_id": ["a", "a", "b", "b", "c", "c"], "song_id": ["1", "2", "1", "3", "2", "3"]})
    ids, X, info = build_song_vectors(songs, VectorsConfig(dim=100), seed=0)
    assert sorted(ids) == ["1", "2", "3"] and X.shape == (3, 2) and info["dim"] == 2


@pytest.mark.parametrize("scale", [1e-30, 1e-8, 1e-5, 1e-3, 0.05, 1.0, 3e4, 1e7, 1e30])
def test_cells_are_what_percent_6g_writes(scale):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(20000) * scale).astype(np.float32).astype(np.float64)
    cells = format_cells(x, np.full(len(x), ord(","), dtype=np.uint8))
    assert cells[cells != 0].tobytes().decode().split(",")[:-1] == [f"{v:.6g}" for v in x.tolist()]


def test_cells_from_the_digit_tables_are_what_percent_6g_writes(monkeypatch):
    """Past the first millions of values a process gathers the digit slots from tables (m -> row): the same bytes."""
    monkeypatch.setattr(csv_floats, "_direct_left", 0)
    monkeypatch.setattr(csv_floats, "_TABLES", {})
    x = np.concatenate([[0.0, -0.0], np.random.default_rng(1).standard_normal(20000) * 1e-5])  # one table: 1e-05 form
    cells = format_cells(x, np.full(len(x), ord(","), dtype=np.uint8))
    assert list(csv_floats._TABLES) == [1]
    assert cells[cells != 0].tobytes().decode().split(",")[:-1] == [f"{v:.6g}" for v in x.tolist()]


def test_cells_of_edge_values():
    x = np.array([0.0, -0.0, 9.999995, 9.9999949, 999999.5, 1e6, 120000.0, 1e-4, 9.99999e-5, 0.5, 1234565.0,
                  4.140625e-05, 5e-324, 1.7976931348623157e308, 1e22, 1e23, np.nan, np.inf, -np.inf])
    cells = format_cells(x, np.full(len(x), ord(";"), dtype=np.uint8))
    assert cells[cells != 0].tobytes().decode().split(";")[:-1] == [f"{v:.6g}" for v in x.tolist()]


def test_csv_lines_keep_every_byte_of_the_prefix():
    X = np.array([[1.5, -2.0], [0.25, 3e-7]], dtype=np.float32)
    assert csv_lines(["a\0b,", '"x,y",é,'], X) == 'a\0b,1.5,-2\n"x,y",é,0.25,3e-07\n'.encode()


def test_song_vectors_round_trip_byte_for_byte_as_percent_6g(tmp_path):
    rng = np.random.default_rng(2)
    X = (rng.standard_normal((4500, 7)) * 10.0 ** rng.integers(-6, 3, (4500, 1))).astype(np.float32)
    ids = [f"s{i}" for i in range(4499)] + ['quo"te,comma']
    path = tmp_path / "song_vectors.csv"
    write_song_vectors(path, ids, X, "mixsongid")
    expected = "mixsongid," + ",".join(f"d{i}" for i in range(7)) + "\n" + "".join(
        f"{i if i.isalnum() else chr(34) + i.replace(chr(34), 2 * chr(34)) + chr(34)},"
        + ",".join(f"{v:.6g}" for v in row) + "\n" for i, row in zip(ids, X.tolist()))
    assert path.read_text(encoding="utf-8") == expected
    got_ids, got_X = load_song_vectors(path)
    assert got_ids == ids
    np.testing.assert_allclose(got_X, X, rtol=6e-6)
