"""Stage 0: demo world, MPD import, --source=csv checks, song vectors and the quality check."""

import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import prepare_data
from playlist_gen.cli import parse_config
from playlist_gen.data import load_playlists, load_song_vectors
from playlist_gen.io import PipelineError
from playlist_gen.mpd import read_mpd
from tests.conftest import ROOT

SMALL_DEMO = ["--source=demo", "--demo.n_songs=400", "--demo.n_artists=40", "--demo.n_playlists=300",
              "--demo.dim=16", "--vectors.quality_sample=200"]
FILES = ("gen_playlist_info.csv", "gen_playlist_song.csv", "gen_song_info.csv", "song_vectors.csv")
BUILT = ("gen_playlist_info.csv", "gen_playlist_song.csv", "gen_song_info.csv", "song_vectors_built.csv")


def run(tmp_path, name, *args):
    return prepare_data.main([f"--data_dir={tmp_path / name}", f"--output_dir={tmp_path / name / 'out'}", *args])


def digests(folder, files=FILES):
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    report = run(tmp, "a", *SMALL_DEMO)
    return tmp / "a", report


def test_demo_is_deterministic_per_seed(demo, tmp_path):
    folder, _ = demo
    run(tmp_path, "b", *SMALL_DEMO)
    assert digests(tmp_path / "b") == digests(folder)
    run(tmp_path, "c", *SMALL_DEMO, "--seed=7")
    assert digests(tmp_path / "c")["gen_playlist_info.csv"] != digests(folder)["gen_playlist_info.csv"]


def test_demo_titles_mix_chinese_english_and_emoji(demo):
    folder, report = demo
    titles = pd.read_csv(folder / "gen_playlist_info.csv", dtype=str)["listname"]
    chinese = titles.str.contains(r"[\u4e00-\u9fff]")
    english = titles.str.contains(r"[A-Za-z]{3}")
    emoji = titles.apply(lambda t: any(ord(c) > 0x2600 and not 0x4E00 <= ord(c) <= 0x9FFF for c in t))
    assert 0.2 < chinese.mean() < 0.8 and 0.2 < english.mean() < 0.9 and emoji.mean() > 0.05
    assert report["distinct_titles"] > 0.3 * report["playlists"]


def test_demo_playlists_are_mostly_in_theme(demo):
    folder, report = demo
    cfg = parse_config([f"--data_dir={folder}"])
    p = load_playlists(cfg)
    song = pd.read_csv(cfg.song_info_path, dtype=str).set_index("mixsongid")
    entries = p.songs.merge(p.info[["playlist_id", "tags"]], on="playlist_id")
    labels = song.loc[entries["song_id"], ["genre", "mood"]].to_numpy()
    in_theme = [all(t in (g, m) for t in tags.split(",")) for (g, m), tags in zip(labels, entries["tags"])]
    assert 0.8 < np.mean(in_theme) < 0.97  # off_theme = 0.1 of the songs come from anywhere
    q = report["quality"]
    assert q["knn_same_artist"] > 10 * q["random_same_artist"]
    assert report["entries_without_vector"] == 0 and report["songs_with_vectors"] == 400


def _track(i):
    return {"track_uri": f"spotify:track:T{i:04d}", "track_name": f"Song {i}", "artist_name": f"Artist {i // 10}"}


def write_mpd(path, playlists, start_pid=0):
    """A tiny MPD slice: each playlist takes most songs from two artists (10 songs each)."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump({"info": {"slice": "test"}, "playlists": [
            {"name": name, "pid": start_pid + j, "num_followers": j, "tracks": [_track(i) for i in tracks],
             **({"description": f"about {name}"} if j % 3 == 1 else {})}
            for j, (name, tracks) in enumerate(playlists)]}, f)
    return path


def synthetic_playlists(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        artists = rng.choice(20, size=2, replace=False)
        songs = [a * 10 + s for a in artists for s in rng.choice(10, size=5, replace=False)]
        out.append((f"mix {artists[0]}", songs + [int(x) for x in rng.choice(200, size=2)]))
    return out


def test_mpd_import_writes_the_contract_and_useful_vectors(tmp_path):
    slice_path = write_mpd(tmp_path / "slice.json.gz", synthetic_playlists(120))
    report = run(tmp_path, "d", "--source=mpd", f"--path={slice_path}", "--vectors.dim=16",
                 "--vectors.quality_min_count=3")
    cfg = parse_config([f"--data_dir={tmp_path / 'd'}"])
    p = load_playlists(cfg)
    assert p.info["playlist_id"].tolist()[:3] == ["0", "1", "2"]
    assert p.info.columns.tolist() == ["playlist_id", "title", "num_followers", "description"]
    description = p.info["description"].tolist()
    assert description[0] == description[2] == "" and description[1].startswith("about mix ")
    first = synthetic_playlists(1)[0][1]
    assert p.song_lists()["0"] == [f"T{i:04d}" for i in first]  # URI id part, playlist order
    ids, X = load_song_vectors(cfg.built_vectors_path)  # built vectors: never in the user's song_vectors.csv
    assert not cfg.song_vectors_path.exists()
    assert X.shape[1] == 16 and set(ids) <= set(p.song_info["song_id"])
    assert report["playlists"] == 120 and report["entries"] == 120 * 12
    assert report["entries_without_vector"] == int((~p.songs["song_id"].isin(ids)).sum())
    q = report["quality"]
    assert q["songs_checked"] > 50 and q["knn_same_artist"] > 5 * q["random_same_artist"]
    assert json.loads(cfg.data_report_path.read_text())["vectors"]["method"] == "sqrtlen"
    run(tmp_path, "d2", "--source=mpd", f"--path={slice_path}", "--vectors.dim=16")
    assert digests(tmp_path / "d2", BUILT) == digests(tmp_path / "d", BUILT)  # seeded SVD: same vectors


def test_mpd_folder_limit_and_duplicate_pids(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    write_mpd(folder / "s.9.json.gz", synthetic_playlists(30), start_pid=0)  # natural order: 9 before 10
    write_mpd(folder / "s.10.json.gz", synthetic_playlists(30, seed=1), start_pid=30)
    t = read_mpd(folder, max_playlists=45, workers=1)
    assert len(t.playlist_ids) == 45 and t.playlist_ids[-1] == "44"
    assert max(map(int, np.concatenate(t.entry_playlist))) == 44
    pooled = read_mpd(folder, workers=2)  # two processes, merged in file order
    assert pooled.playlist_ids == [str(i) for i in range(60)]
    assert list(pooled.song_uris)[:45] == list(t.song_uris)[:45]
    write_mpd(folder / "s.11.json.gz", synthetic_playlists(2), start_pid=29)
    with pytest.raises(PipelineError, match=r"s.11.json.gz: pid 29 .* already read from s.9.json.gz"):
        read_mpd(folder, workers=1)


@pytest.mark.parametrize("text,needle", [
    ('{"playlists": [{"name": "a", "pid": 1, "tracks": []}, {"name": "b", "pid": 2, "tracks": [}]}',
     r"bad.json, playlist 1: invalid JSON"),
    ('{"playlists": [{"name": "a", "pid": 1, "tracks": [{"track_name": "x"}]}]}',
     r"bad.json, playlist 0, track 0: no \"track_uri\""),
    ('{"playlists": [{"name": "a", "tracks": []}]}', r"bad.json, playlist 0: missing key 'pid'"),
    ('{"info": {}}', r"bad.json: no \"playlists\" array"),
    ('{"playlists": [{"name": "a", "pid": 1, "tracks": []} {"name": "b"}]}', r"playlist 1: expected ','"),
    ('{"playlists": [{"name": "a", "pid": 1, "tracks": [', r"playlist 0: invalid JSON"),
    ('{"playlists": [{"name": "a", "pid": {"x": 1}, "tracks": [{"track_uri": "u"}]}]}',
     r'playlist 0: "pid" is {"x": 1}; MPD pids are numbers'),  # was accepted as the id "{'x': 1}"
])
def test_bad_mpd_json_names_file_and_playlist(tmp_path, text, needle):
    (tmp_path / "bad.json").write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError, match=needle):
        read_mpd(tmp_path / "bad.json")


def test_mpd_stream_survives_chunk_borders(tmp_path, monkeypatch):
    monkeypatch.setattr("playlist_gen.mpd.CHUNK_CHARS", 97)  # objects and strings cut everywhere
    playlists = synthetic_playlists(20)
    playlists[3] = ("  Chill\n  vibes ☕ ", playlists[3][1])
    t = read_mpd(write_mpd(tmp_path / "s.json.gz", playlists))
    assert len(t.playlist_ids) == 20 and t.titles[3] == "Chill vibes ☕"
    assert sum(map(len, t.entry_song)) == 20 * 12


def test_failed_import_leaves_earlier_files_untouched(demo, tmp_path):
    folder, _ = demo
    shutil.copytree(folder, tmp_path / "e")
    before = digests(tmp_path / "e")
    (tmp_path / "bad.json").write_text('{"playlists": [{"name": "a", "pid": 1, "tracks": [', encoding="utf-8")
    with pytest.raises(PipelineError):
        run(tmp_path, "e", "--source=mpd", f"--path={tmp_path / 'bad.json'}")
    assert digests(tmp_path / "e") == before


def test_csv_source_checks_files_and_builds_missing_vectors(demo, tmp_path):
    folder, demo_report = demo
    shutil.copytree(folder, tmp_path / "f")
    report = run(tmp_path, "f", "--source=csv")
    assert report["vectors"]["method"] == "given" and report["entries"] == demo_report["entries"]
    (tmp_path / "f" / "song_vectors.csv").unlink()
    report = run(tmp_path, "f", "--source=csv", "--vectors.dim=8", "--vectors.quality_min_count=3")
    assert not (tmp_path / "f" / "song_vectors.csv").exists()  # built vectors are kept apart from given ones
    ids, X = load_song_vectors(tmp_path / "f" / "song_vectors_built.csv")
    assert X.shape[1] == 8 and report["songs_with_vectors"] == len(ids)
    assert report["quality"]["knn_same_artist"] > 3 * report["quality"]["random_same_artist"]


def test_bad_input_is_one_error_line_and_exit_1(demo, tmp_path):
    folder, _ = demo
    shutil.copytree(folder, tmp_path / "g")
    vectors = tmp_path / "g" / "song_vectors.csv"
    lines = vectors.read_text(encoding="utf-8").splitlines()
    lines[5] = re.sub(r",[^,]+$", ",nan", lines[5])
    vectors.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "prepare_data.py", "--source=csv", f"--data_dir={tmp_path / 'g'}",
                           f"--output_dir={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert re.search(r"song_vectors.csv, line 6, column \d+: 'nan' is not finite", errors[0])
    assert not (tmp_path / "out" / "configs").exists()


@pytest.mark.parametrize("args,needle", [
    (["--source=mpd"], "--source=mpd needs --path"),
    (["--source=mpd", "--path=/nonexistent/mpd"], "/nonexistent/mpd not found: point --path at an MPD slice"),
    (["--source=csv"], "gen_playlist_info.csv not found: run `python prepare_data.py --source=demo`"),
])
def test_usage_errors(tmp_path, args, needle):
    with pytest.raises(PipelineError, match=re.escape(needle)):
        run(tmp_path, "h", *args)


@pytest.mark.parametrize("args,needle", [
    (["--source=spotify"], "--data.source='spotify': choose one of demo | mpd | csv"),
    (SMALL_DEMO + ["--demo.min_songs=40"], "--demo.min_songs=40, --demo.max_songs=30: need min_songs <= max_songs"),
    (["--source=demo", "--demo.n_playlists=0"], "--demo.n_playlists=0: must be >= 1"),  # was a NaN traceback
    (["--source=mpd", "--vectors.dim=0"], "--vectors.dim=0: must be >= 1"),  # was blamed on the song count
])
def test_option_errors_exit_2_before_any_work(tmp_path, args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "h", *args)
    assert e.value.code == 2 and capsys.readouterr().err.strip() == f"error: {needle}"
    assert not (tmp_path / "h").exists()


def test_real_mpd_slice(mpd_path, tmp_path):
    report = run(tmp_path, "m", "--source=mpd", f"--path={mpd_path}", "--mpd_max_playlists=300",
                 "--vectors.dim=32", "--vectors.quality_min_count=3", "--vectors.quality_sample=300")
    assert report["playlists"] == 300 and report["songs_with_vectors"] > 1000
    assert 0 < report["entries_without_vector"] < report["entries"]
    q = report["quality"]
    assert q["songs_checked"] > 100 and q["knn_same_artist"] > 10 * q["random_same_artist"]


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_mpd_slice_with_a_latin1_byte_is_one_error(tmp_path, suffix):
    """It was a UnicodeDecodeError traceback from the whole-file decoder."""
    raw = json.dumps({"playlists": [{"name": "café", "pid": 1, "tracks": [{"track_uri": "spotify:track:A"}]}]},
                     ensure_ascii=False).encode().replace("é".encode(), b"\xe9")
    path = tmp_path / f"s{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    with pytest.raises(PipelineError, match=rf"s{re.escape(suffix)}: not valid UTF-8 \(byte 0xe9 at offset 28\)"):
        read_mpd(path)


def test_vector_ids_that_match_no_playlist_song_stop_with_examples(demo, tmp_path):
    """Vectors keyed `1` against playlists keyed `000001` used to exit 0 and fail later with another message."""
    folder, _ = demo
    shutil.copytree(folder, tmp_path / "i", ignore=shutil.ignore_patterns("manifests", "data_report.json"))
    vectors = tmp_path / "i" / "song_vectors.csv"
    lines = vectors.read_text().splitlines()
    vectors.write_text("\n".join([lines[0]] + [re.sub(r"^0+(\d)", r"\1", line) for line in lines[1:]]) + "\n")
    with pytest.raises(PipelineError, match=r"100.0% of the [\d,]+ playlist entries have no vector in .* \(songs such "
                                            r"as \['000\d+', .* ids such as \['\d+', .*`000001` is not `1`"):
        run(tmp_path, "i", "--source=csv")
    assert not (tmp_path / "i" / "manifests").exists()


def test_demo_songs_have_distinct_names_per_artist_and_plain_band_names(demo):
    folder, _ = demo
    songs = pd.read_csv(folder / "gen_song_info.csv", dtype=str)
    assert not songs.duplicated(["songname", "singername"]).any()  # "Midnight Fire - 蔡一欣" twice in one playlist
    assert not songs["singername"].str.endswith("ss").any()  # "The Wavess"
    assert songs["singername"].str.startswith("The ").any()


def test_prepare_data_writes_nothing_outside_data_dir(tmp_path, monkeypatch):
    """Without --output_dir the data stage must not write ./outputs/configs/, which may be another run's."""
    monkeypatch.chdir(tmp_path)
    prepare_data.main(["--source=demo", f"--data_dir={tmp_path / 'd'}", "--demo.n_songs=60", "--demo.n_artists=6",
                       "--demo.n_playlists=30", "--demo.dim=4", "--vectors.quality_sample=10"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert (tmp_path / "d" / "configs" / "prepare_data.json").exists()
