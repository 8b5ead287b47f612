"""MPD import: the whole-file (msgspec) path and the streaming path agree, unusual slices still import, and
the entries file is written as the csv module would write it."""

import csv
import json

import numpy as np
import pandas as pd
import pytest

from playlist_gen import mpd
from playlist_gen.data import write_pairs_csv
from playlist_gen.io import PipelineError
from playlist_gen.mpd import read_file, read_mpd, to_frames
from tests.test_prepare_data import synthetic_playlists, write_mpd

TABLE_FIELDS = ("playlist_ids", "titles", "extra", "skipped")
SONG_FIELDS = ("uris", "names", "artists")  # Packed strings


def _same_tables(a, b):
    for name in TABLE_FIELDS:
        assert getattr(a, name) == getattr(b, name), name
    for name in SONG_FIELDS:
        assert getattr(a, name).take() == getattr(b, name).take(), name
    assert a.lengths.tolist() == b.lengths.tolist() and a.entry_song.tolist() == b.entry_song.tolist()


def _write_json(path, playlists):
    path.write_text(json.dumps({"info": {}, "playlists": playlists}), encoding="utf-8")
    return path


def test_whole_file_and_streaming_paths_agree(tmp_path, monkeypatch):
    playlists = synthetic_playlists(40)
    playlists[5] = ("", playlists[5][1])  # skipped: no title
    playlists[7] = ("  Chill\n  vibes ☕ ", [])  # skipped: no tracks
    path = write_mpd(tmp_path / "s.json.gz", playlists)
    whole = read_file(path)
    monkeypatch.setattr(mpd, "WHOLE_FILE_BYTES", 100)  # every file is "huge": streamed
    streamed = read_file(path)
    _same_tables(whole, streamed)
    assert whole.skipped == {"playlists without a title": 1, "playlists without tracks": 1}
    assert len(whole.uris) == len(set(whole.uris.take())) and whole.entry_song.max() == len(whole.uris) - 1
    assert list(whole.extra) == ["num_followers", "description"] and whole.extra["description"][0] is None


def test_unusual_values_fall_back_to_the_streaming_reader(tmp_path):
    track = {"track_uri": "spotify:track:A", "track_name": None, "artist_name": 7}  # not the strict schema
    path = _write_json(tmp_path / "odd.json", [
        {"name": 12, "pid": "x1", "tracks": [track, {"track_uri": "spotify:track:B", "track_name": "b"}]},
        {"name": "no tracks", "pid": 2, "tracks": None},
    ])
    t = read_file(path)
    assert t.playlist_ids == ["x1"] and t.titles == ["12"] and t.uris.take() == ["spotify:track:A", "spotify:track:B"]
    assert t.names.take() == ["", "b"] and t.artists.take() == ["7", ""]
    assert t.skipped == {"playlists without tracks": 1}
    info, songs, song_info = to_frames(read_mpd(path, workers=1))
    assert song_info["artist"].tolist() == ["7", ""] and song_info["song_id"].tolist() == ["A", "B"]


def test_limit_keeps_only_songs_of_kept_playlists(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    write_mpd(folder / "s.1.json.gz", [("a", [1, 2])], start_pid=0)
    write_mpd(folder / "s.2.json.gz", [("b", [2, 3]), ("c", [4, 5])], start_pid=1)
    t = read_mpd(folder, max_playlists=2, workers=1)
    assert t.playlist_ids == ["0", "1"] and list(t.song_uris) == [f"spotify:track:T{i:04d}" for i in (1, 2, 3)]
    assert np.concatenate(t.entry_song).tolist() == [0, 1, 1, 2]
    assert np.concatenate(t.entry_playlist).tolist() == [0, 0, 1, 1]


def test_duplicate_pid_inside_one_file(tmp_path):
    path = write_mpd(tmp_path / "s.json.gz", [("a", [1]), ("b", [2])])
    playlists = json.loads(__import__("gzip").decompress(path.read_bytes()))["playlists"]
    playlists[1]["pid"] = 0
    with pytest.raises(PipelineError, match=r"dup.json: pid 0 \(its playlist 1 with a title\) was already read"):
        read_mpd(_write_json(tmp_path / "dup.json", playlists), workers=1)


@pytest.mark.parametrize("long_id", [False, True])  # True: one 200-char id takes the joined-bytes path
def test_pairs_csv_matches_the_csv_module(tmp_path, long_id):
    lefts = ["7", "a,b", 'say "hi"', "line\nbreak", "é☕"]  # (a lone \r is quoted too, unlike csv with "\n")
    rights = ["s1", "", "x" * (200 if long_id else 3), "ü,\"q\""]
    rng = np.random.default_rng(0)
    left_codes, right_codes = rng.integers(0, len(lefts), 50), rng.integers(0, len(rights), 50)
    right_codes[3] = -1  # a missing value: an empty field
    left = pd.Categorical.from_codes(left_codes, lefts)
    right = pd.Categorical.from_codes(right_codes, rights)
    write_pairs_csv(tmp_path / "p.csv", ("pid", "song,id"), left, right, chunk=7)
    with open(tmp_path / "expected.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["pid", "song,id"])
        w.writerows([lefts[a], rights[b] if b >= 0 else ""] for a, b in zip(left_codes, right_codes))
    assert (tmp_path / "p.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()


def test_packed_strings_cut_out_what_is_asked():
    packed = mpd.Packed.of(["ab", "", "c☕", "def"])
    assert len(packed) == 4 and packed.take() == ["ab", "", "c☕", "def"]
    assert packed.take([3, 0]) == ["def", "ab"] and packed.take(slice(2)) == ["ab", ""] and packed.take([]) == []
    assert mpd.Packed.of([]).take() == []


@pytest.mark.parametrize("limit", [0, 95])  # 95: the last file is cut inside
def test_worker_processes_merge_like_one_process(tmp_path, limit):
    folder = tmp_path / "slices"
    folder.mkdir()
    for k in range(5):  # songs repeat across files
        write_mpd(folder / f"s.{k}.json.gz", synthetic_playlists(20, seed=k), start_pid=20 * k)
    one, pooled = read_mpd(folder, limit, workers=1), read_mpd(folder, limit, workers=2)
    assert list(pooled.song_uris.items()) == list(one.song_uris.items()) and len(one.playlist_ids) == (limit or 100)
    assert pooled.song_names == one.song_names and pooled.playlist_ids == one.playlist_ids
    for name in ("entry_playlist", "entry_song"):
        assert np.concatenate(getattr(pooled, name)).tolist() == np.concatenate(getattr(one, name)).tolist()
