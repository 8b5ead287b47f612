"""The four input loaders of playlist_gen/data.py on good and bad files."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playlist_gen import data
from playlist_gen.cli import parse_config
from playlist_gen.data import load_playlists, load_song_vectors, write_playlists, write_song_vectors
from playlist_gen.io import PipelineError

INFO = "glid,listname,tags\n007,深夜emo 🌙,sad\n010,\"workout, hits\",gym\n"
SONGS = "special_gid,mixsongid\n007,0001\n007,0002\n010,0003\n007,0003\n"
SONG_INFO = "mixsongid,songname,singername\n0001,晚风,林一\n0002,Blue Rain,The Waves\n0003,Echo,Ada Sky\n"
VECTORS = "mixsongid,d0,d1,d2\n0001,0.5,-1,2e-3\n0002,1,2,3\n0003,0,0,1\n"


def write_files(tmp_path, **override):
    files = {"gen_playlist_info.csv": INFO, "gen_playlist_song.csv": SONGS, "gen_song_info.csv": SONG_INFO,
             "song_vectors.csv": VECTORS, **override}
    for name, text in files.items():
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text, encoding="utf-8")
    return parse_config([f"--data_dir={tmp_path}"])


def test_good_files_keep_string_ids_order_and_extra_columns(tmp_path):
    cfg = write_files(tmp_path)
    p = load_playlists(cfg)
    assert p.info["playlist_id"].tolist() == ["007", "010"]
    assert p.info["title"].tolist() == ["深夜emo 🌙", "workout, hits"]
    assert p.info["tags"].tolist() == ["sad", "gym"]  # extra columns are kept
    assert p.song_lists() == {"007": ["0001", "0002", "0003"], "010": ["0003"]}
    assert p.song_info.columns.tolist() == ["song_id", "name", "artist"]
    assert p.song_info["song_id"].tolist() == ["0001", "0002", "0003"]
    ids, X = load_song_vectors(cfg.song_vectors_path)
    assert ids == ["0001", "0002", "0003"]
    assert X.dtype == np.float32 and X.shape == (3, 3)
    np.testing.assert_allclose(X[0], [0.5, -1, 0.002])


def test_configured_column_names(tmp_path):
    cfg = write_files(tmp_path, **{"gen_playlist_info.csv": "pid,name\n1,chill\n"})
    with pytest.raises(PipelineError, match=r"missing column\(s\) \['glid', 'listname'\].*--data.playlist_id_col"):
        load_playlists(cfg)
    cfg = parse_config([f"--data_dir={tmp_path}", "--data.playlist_id_col=pid", "--data.title_col=name",
                        "--data.ps_playlist_col=special_gid"])
    (tmp_path / "gen_playlist_song.csv").write_text("special_gid,mixsongid\n1,0001\n", encoding="utf-8")
    assert load_playlists(cfg).info["title"].tolist() == ["chill"]


def test_excel_bom_is_not_part_of_the_first_column(tmp_path):
    cfg = write_files(tmp_path, **{"gen_playlist_info.csv": b"\xef\xbb\xbf" + INFO.encode(),
                                   "song_vectors.csv": b"\xef\xbb\xbf" + VECTORS.encode()})
    assert load_playlists(cfg).info["playlist_id"].tolist() == ["007", "010"]
    assert load_song_vectors(cfg.song_vectors_path)[0][0] == "0001"


def test_missing_file_names_the_stage_that_makes_it(tmp_path):
    cfg = write_files(tmp_path, **{"gen_song_info.csv": None})
    with pytest.raises(PipelineError, match=r"gen_song_info.csv not found: run `python prepare_data.py"):
        load_playlists(cfg)


@pytest.mark.parametrize("name,text,needle", [
    ("gen_playlist_info.csv", INFO + "011,a,b,c\n", r"gen_playlist_info.csv, line 4: 4 fields where the header has 3"),
    ("gen_playlist_info.csv", INFO + "007,again,x\n", r"gen_playlist_info.csv, line 4: duplicate glid '007'"),
    ("gen_playlist_info.csv", INFO + "012, ,x\n", r"gen_playlist_info.csv, line 4: empty 'listname'"),
    ("gen_playlist_song.csv", SONGS + "010\n", r"gen_playlist_song.csv, line 6: empty 'mixsongid'"),
    ("gen_song_info.csv", SONG_INFO + "0001,x,y\n", r"gen_song_info.csv, line 5: duplicate mixsongid '0001'"),
    ("gen_song_info.csv", "", r"gen_song_info.csv: the file is empty"),
    ("gen_song_info.csv", "id,name\n1,a\n", r"missing column\(s\) \['mixsongid', 'songname', 'singername'\]"),
])
def test_bad_playlist_files_name_file_and_line(tmp_path, name, text, needle):
    cfg = write_files(tmp_path, **{name: text})
    with pytest.raises(PipelineError, match=needle):
        load_playlists(cfg)


def test_line_numbers_count_blank_lines_and_a_quoted_line_break_is_an_error(tmp_path):
    info = 'glid,listname\n1,one\n\n2,ok\n1,dup\n'
    cfg = write_files(tmp_path, **{"gen_playlist_info.csv": info})
    with pytest.raises(PipelineError, match=r"gen_playlist_info.csv, line 5: duplicate glid '1'"):
        load_playlists(cfg)
    cfg = write_files(tmp_path, **{"gen_playlist_info.csv": info.replace("1,dup", "3,a,b")})
    with pytest.raises(PipelineError, match=r"gen_playlist_info.csv, line 5: 3 fields where the header has 2"):
        load_playlists(cfg)
    cfg = write_files(tmp_path, **{"gen_playlist_info.csv": 'glid,listname\n1,"two\nlines"\n\n2,ok\n'})
    with pytest.raises(PipelineError, match=r"gen_playlist_info.csv, line 2: a quoted field runs over a line break"):
        load_playlists(cfg)


def test_an_unbalanced_quote_that_swallows_a_row_names_its_line(tmp_path):
    """Issue 16: `049,"broken title,happy,happy/*` swallowed the next row into its title, exit 0."""
    info = 'glid,listname,tags\n048,fine,a\n049,"broken title,happy,happy/*\n050,next",b\n051,ok,c\n'
    cfg = write_files(tmp_path, **{"gen_playlist_info.csv": info})
    with pytest.raises(PipelineError, match=r"gen_playlist_info.csv, line 3: a quoted field runs over a line break"):
        load_playlists(cfg)


def test_non_utf8_names_the_line(tmp_path):
    cfg = write_files(tmp_path, **{"gen_playlist_info.csv": INFO.encode() + b"012,caf\xe9,x\n"})
    with pytest.raises(PipelineError, match=r"gen_playlist_info.csv, line 4: not valid UTF-8 \(byte 0xe9"):
        load_playlists(cfg)


@pytest.mark.parametrize("extra,needle", [
    ("0004,1,nan,3\n", r"line 5, column 3: 'nan' is not finite"),
    ("0004,1,2,inf\n", r"line 5, column 4: 'inf' is not finite"),
    ("0004,1,,3\n", r"line 5, column 3: '' is not a number"),
    ("0004,1,x,3\n", r"line 5, column 3: 'x' is not a number"),
    ("0002,1,2,3\n", r"line 5: duplicate song id '0002' \(first on line 3\)"),
    ("0004,1,2\n", r"line 5: 3 fields where the header has 4"),
    ("0004,1,2,3,4\n", r"line 5: 5 fields where the header has 4"),
    (" ,1,2,3\n", r"line 5: empty song id"),
    ("0004,1,1e39,3\n", r"line 5, column 3: '1e39' is beyond the float32 range"),  # was a numpy warning
])
def test_bad_vectors_name_file_and_line(tmp_path, extra, needle):
    cfg = write_files(tmp_path, **{"song_vectors.csv": VECTORS + extra})
    with pytest.raises(PipelineError, match=r"song_vectors.csv, " + needle):
        load_song_vectors(cfg.song_vectors_path)


@pytest.mark.parametrize("content,needle", [
    (VECTORS.encode() + b"0004,1,2,\xff3\n", r"line 5: not valid UTF-8 \(byte 0xff\)"),
    (b"", r"line 1: expected a header"),
    (b"mixsongid\n0001\n", r"line 1: expected a header"),
    (b"mixsongid,d0\n", r"no song vectors after the header"),
])
def test_unreadable_vector_files(tmp_path, content, needle):
    cfg = write_files(tmp_path, **{"song_vectors.csv": content})
    with pytest.raises(PipelineError, match=needle):
        load_song_vectors(cfg.song_vectors_path)


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(titles=st.lists(_text.filter(str.strip), min_size=1, max_size=5),
       ids=st.lists(st.text("0123456789abc,\"é", min_size=1, max_size=6), min_size=1, max_size=5, unique=True))
def test_writers_and_loaders_round_trip(tmp_path, titles, ids):
    titles = (titles * len(ids))[:len(ids)]
    cfg = parse_config([f"--data_dir={tmp_path}"])
    info = pd.DataFrame({"playlist_id": ids, "title": titles})
    songs = pd.DataFrame({"playlist_id": ids, "song_id": ids[::-1]})
    song_info = pd.DataFrame({"song_id": ids, "name": titles, "artist": titles})
    write_playlists(cfg, info, songs, song_info)
    X = np.arange(len(ids) * 2, dtype=np.float32).reshape(-1, 2) / 7
    write_song_vectors(cfg.song_vectors_path, ids, X, cfg.data.song_id_col)
    p = load_playlists(cfg)
    assert p.info["playlist_id"].tolist() == ids and p.info["title"].tolist() == titles
    assert p.songs["song_id"].tolist() == ids[::-1]
    got_ids, got_X = load_song_vectors(cfg.song_vectors_path)
    assert got_ids == ids
    np.testing.assert_allclose(got_X, X, rtol=1e-5)


def test_entries_load_as_categoricals_in_file_order_across_chunks(tmp_path, monkeypatch):
    """IDs that look like numbers stay strings (`007` is not `7`); categories follow first appearance even
    when the file is read in several chunks."""
    monkeypatch.setattr(data, "CHUNK_ROWS", 2)
    songs = "special_gid,mixsongid\n010,0003\n007,7\n007,007\n010,7\n007,0003\n007,NaN\n010,NULL\n"
    info = "glid,listname\n007,a\n010,b\n"
    song_info = "mixsongid,songname,singername\n7,x,y\n007,x,y\n0003,x,y\nNaN,x,y\nNULL,x,y\n"
    cfg = write_files(tmp_path, **{"gen_playlist_song.csv": songs, "gen_playlist_info.csv": info,
                                   "gen_song_info.csv": song_info})
    p = load_playlists(cfg)
    assert all(isinstance(p.songs[c].dtype, pd.CategoricalDtype) for c in ("playlist_id", "song_id"))
    assert p.songs["song_id"].cat.categories.tolist() == ["0003", "7", "007", "NaN", "NULL"]
    assert p.songs["playlist_id"].cat.categories.tolist() == ["010", "007"]
    assert p.songs["song_id"].astype(str).tolist() == ["0003", "7", "007", "7", "0003", "NaN", "NULL"]
    assert p.song_lists() == {"010": ["0003", "7", "NULL"], "007": ["7", "007", "0003", "NaN"]}
    assert p.song_lists(only={"007", "nope"}) == {"007": ["7", "007", "0003", "NaN"]}  # evaluation's test playlists


def test_true_false_ids_stay_strings(tmp_path):
    songs = "special_gid,mixsongid\n007,True\n010,false\n007,TRUE\n"
    song_info = "mixsongid,songname,singername\nTrue,a,b\nfalse,a,b\nTRUE,a,b\n"
    cfg = write_files(tmp_path, **{"gen_playlist_song.csv": songs, "gen_song_info.csv": song_info})
    assert load_playlists(cfg).song_lists() == {"007": ["True", "TRUE"], "010": ["false"]}


def test_entries_of_unknown_playlists_are_counted_and_dropped(tmp_path, caplog):
    cfg = write_files(tmp_path, **{"gen_playlist_song.csv": SONGS + "999,0001\n998,0002\n"})
    p = load_playlists(cfg)
    assert "2 rows name a playlist missing from gen_playlist_info.csv" in caplog.text
    assert p.songs["playlist_id"].cat.categories.tolist() == ["007", "010"]
    assert p.song_lists() == {"007": ["0001", "0002", "0003"], "010": ["0003"]}


@pytest.mark.parametrize("name,header", [("gen_playlist_song.csv", "special_gid,mixsongid"),
                                         ("gen_playlist_info.csv", "glid,listname"),
                                         ("gen_song_info.csv", "mixsongid,songname,singername")])
def test_file_with_only_a_header_is_one_error(tmp_path, name, header):
    """Nothing can be made of it; it used to end in `cannot convert float NaN to integer` in prepare_data.py."""
    cfg = write_files(tmp_path, **{name: header + "\n"})
    with pytest.raises(PipelineError, match=rf"{name}: no \w+( \w+)? after the header"):
        load_playlists(cfg)


def test_entries_naming_no_known_playlist_are_one_error(tmp_path):
    cfg = write_files(tmp_path, **{"gen_playlist_song.csv": "special_gid,mixsongid\n1,0001\n"})
    with pytest.raises(PipelineError, match=r"none of its 1 rows names a playlist of gen_playlist_info.csv \(e.g. '1'"):
        load_playlists(cfg)


def test_empty_entry_cell_line_counts_blank_lines_and_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CHUNK_ROWS", 2)
    cfg = write_files(tmp_path, **{"gen_playlist_song.csv": SONGS + "\n007,0001\n010, \n"})
    with pytest.raises(PipelineError, match=r"gen_playlist_song.csv, line 8: empty 'mixsongid'"):
        load_playlists(cfg)


@pytest.mark.parametrize("header,needle", [
    ("mixsongid,d0,d1,d2,popularity", r"column 5: 'popularity' is not a dimension like the others \('d0' \.\.\."),
    ("mixsongid,popularity,dim_0,dim_1", r"column 2: 'popularity' is not a dimension .* name it dim_<n>"),
    ("mixsongid,d0,d1,x2,d3", r"column 4: 'x2' is not a dimension"),
])
def test_a_column_that_is_no_dimension_is_named(tmp_path, header, needle):
    """An extra numeric column (popularity) used to become a dimension and drown the others."""
    rows = "".join(f"000{i},1,2,3,{100 * i}\n" for i in range(1, 4))
    cfg = write_files(tmp_path, **{"song_vectors.csv": header + "\n" + rows})
    with pytest.raises(PipelineError, match=needle):
        load_song_vectors(cfg.song_vectors_path)


@pytest.mark.parametrize("header", ["mixsongid,x,y,z", "mixsongid,energy,valence,tempo", "mixsongid,0,1,2"])
def test_dimension_columns_of_one_kind_are_accepted(tmp_path, header):
    cfg = write_files(tmp_path, **{"song_vectors.csv": header + "\n0001,1,2,3\n"})
    assert load_song_vectors(cfg.song_vectors_path)[1].shape == (1, 3)


def test_song_info_ids_that_match_no_playlist_song_stop_like_vector_ids(tmp_path):
    cfg = write_files(tmp_path, **{"gen_song_info.csv": "mixsongid,songname,singername\n1,a,b\n2,c,d\n3,e,f\n"})
    with pytest.raises(PipelineError, match=r"gen_song_info.csv: 100% of the 3 playlist songs have no row .* `000001` "
                                            r"is not `1`"):
        load_playlists(cfg)


def test_npz_written_aligned_reads_back_mapped_and_with_np_load(tmp_path):
    """The song index's format: np.load reads it; mapped_npz maps each array at a multiple of 64 bytes (numpy and
    scipy use aligned arrays without a copy), and writes to a mapped array never reach the file."""
    import zipfile

    from playlist_gen.io import mapped_npz, write_npz

    arrays = {"i32": np.arange(1001, dtype=np.int32), "f64": np.linspace(0, 1, 7), "empty": np.zeros(0),
              "scalar": np.array(6), "u8": np.frombuffer("深夜emo".encode(), dtype=np.uint8),
              "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "text": np.array(["a", "bb"])}
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        write_npz(f, arrays)
    mapped = mapped_npz(path)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(mapped) == sorted(arrays)
        for name, a in arrays.items():
            assert np.array_equal(z[name], a) and np.array_equal(mapped[name], a) and mapped[name].dtype == a.dtype
            assert mapped[name].ctypes.data % 64 == 0, name
    mapped["i32"][0] = 7
    assert mapped_npz(path)["i32"][0] == 0
    path.write_bytes(path.read_bytes()[:-30])  # the zip's directory cut off
    with pytest.raises(zipfile.BadZipFile):
        mapped_npz(path)
    np.savez_compressed(path, a=np.arange(3))
    with pytest.raises(ValueError, match="compressed"):
        mapped_npz(path)
