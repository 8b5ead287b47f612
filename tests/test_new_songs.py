"""New songs without retraining: --rqkmeans.assign_only / --rqvae.assign_only give IDs to songs added to
song_vectors.csv with the saved quantiser, and the next generated playlist can hold them."""

import pandas as pd
import pytest

import generate_playlist
import prepare_corpus
import prepare_data
import train_rq_kmeans
import train_rqvae
import train_tiger
from config import Config
from playlist_gen.catalogue import load_catalogue
from playlist_gen.cli import parse_config
from playlist_gen.semantic_ids import load_semantic_ids

WORLD = ["--demo.n_songs=300", "--demo.n_artists=40", "--demo.n_playlists=240"]
TINY = ["--tiger.d_model=32", "--tiger.d_ff=64", "--tiger.num_layers=1", "--tiger.num_decoder_layers=1",
        "--tiger.num_heads=2", "--tiger.d_kv=16", "--tiger.sp_vocab_size=320", "--tiger.threads=1",
        "--tiger.max_steps=10", "--tiger.eval_steps=5", "--tiger.save_steps=5", "--tiger.ensemble=1"]


def add_songs(cfg: Config, n: int) -> list[str]:
    """n new songs: copies of the vectors of the n most played songs, under new IDs and names."""
    vectors = pd.read_csv(cfg.song_vectors_path, dtype={cfg.data.song_id_col: str})
    played = pd.read_csv(cfg.playlist_song_path, dtype=str)[cfg.data.ps_song_col].value_counts().index[:n]
    copies = vectors.set_index(cfg.data.song_id_col).loc[played].reset_index()
    new_ids = [f"new{i}" for i in range(n)]
    copies[cfg.data.song_id_col] = new_ids
    pd.concat([vectors, copies]).to_csv(cfg.song_vectors_path, index=False)
    info = pd.read_csv(cfg.song_info_path, dtype=str)
    names = pd.DataFrame({cfg.data.song_id_col: new_ids, cfg.data.song_name_col: [f"New Song {i}" for i in range(n)],
                          cfg.data.artist_col: "Newcomer"})
    pd.concat([info, names]).to_csv(cfg.song_info_path, index=False)
    return new_ids


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_new_songs_join_existing_clusters_and_playlists(tmp_path, method):
    args = [f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}", f"--model_dir={tmp_path / 'm'}"]
    cfg = Config(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), model_dir=str(tmp_path / "m"))
    prepare_data.main(args + ["--source=demo"] + WORLD)
    stage = train_rq_kmeans if method == "rqkmeans" else train_rqvae
    stage.main(args + (["--rqvae.epochs=3"] if method == "rqvae" else []))
    prepare_corpus.main(args)
    train_tiger.main(args + TINY)
    before, _ = load_semantic_ids(cfg)
    load_catalogue(cfg)  # cached now; must be rebuilt with the new songs
    new = add_songs(cfg, 60)
    prepare_data.main(args + ["--source=csv"])  # checks the edited files and records them (manifests)
    stage.main(args + [f"--{method}.assign_only=true"])
    after, meta = load_semantic_ids(cfg)
    assert {s: after[s] for s in before} == before  # songs with IDs keep them
    assert set(new) <= set(after) and {after[s] for s in new} <= set(before.values())  # existing clusters only
    assert meta["assigned_without_refit"] == 60
    index = load_catalogue(cfg).index
    assert set(new) <= set(index.song_cluster) and index.name("new0") == ("New Song 0", "Newcomer")
    maker = generate_playlist.PlaylistMaker(parse_config(args + ["--pick=random", "--num_songs=20",
                                                                 "--recommend.method=model"]))  # its clusters' songs
    seen = {s for _ in range(20) for s, _ in maker.playlist("chill")}
    assert seen & set(new)
    stage.main(args + [f"--{method}.assign_only=true"])  # again: nothing new, nothing changes
    assert load_semantic_ids(cfg)[0] == after
