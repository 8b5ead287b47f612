"""Stage 4-5 on a tiny trained pipeline: generate_playlist.py, and what it prints against evaluate_tiger.py's
shown playlists (evaluation under torchrun is in test_end_to_end)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_corpus import config_for, make_world

import evaluate_tiger
import generate_playlist
import prepare_corpus
import train_tiger
from playlist_gen.cli import parse_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--tiger.d_model=32", "--tiger.d_ff=64", "--tiger.num_layers=1", "--tiger.num_decoder_layers=1",
        "--tiger.num_heads=2", "--tiger.d_kv=16", "--tiger.batch_size=16", "--tiger.sp_vocab_size=320",
        "--tiger.threads=1", "--tiger.max_steps=8", "--tiger.eval_steps=4", "--tiger.save_steps=4",
        "--tiger.ensemble=1"]
EVAL = ["--eval.k=20", "--eval.n_clusters=10", "--generate.batch_size=4", "--generate.num_beams=2",
        "--eval.examples=3"]
SONG_LINE = re.compile(r"^\s*\d+\. \S.* - \S.* \((cluster \d+-\d+: (1 of \d+ songs|its only song)"
                       r"|no cluster: from similar playlists)\)$")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    args = make_world(root)
    prepare_corpus.main(args + ["--corpus.test_fraction=0.15"])
    train_tiger.main(args + TINY)
    return args


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run(cmd, **kw):
    out = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240, **kw)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def cli(args, monkeypatch, capsys, stdin: str | None = None) -> str:
    """generate_playlist.py's main in this process (a subprocess adds only an interpreter start), with `stdin` piped
    in as UTF-8 bytes; returns what it printed."""
    import io

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8"))
    capsys.readouterr()
    generate_playlist.main(args)
    return capsys.readouterr().out


def test_generate_one_shot_and_piped_titles(pipeline, monkeypatch, capsys):
    out = cli([*pipeline, "--title", "深夜emo 🌙", "--num_songs", "5", "--explain"], monkeypatch, capsys).splitlines()
    songs = [line for line in out if SONG_LINE.match(line)]
    assert len(songs) == 5, out
    assert sum("also in its cluster:" in line for line in out) == 5
    piped = cli([*pipeline, "--num_songs=4"], monkeypatch, capsys, stdin="chill\n\nroad trip\n").splitlines()
    assert sum(bool(SONG_LINE.match(line)) for line in piped) == 8
    assert sum(line.startswith("🎵") for line in piped) == 2


@pytest.mark.parametrize("pick", ["diverse", "cluster"])
def test_the_cli_prints_the_playlist_evaluation_scores(pipeline, tmp_path, pick):
    """What is shown is what is measured: evaluate_tiger.py's shown playlist of a test title (its examples file) is
    the list generate_playlist.py prints for that title (typed alone: no tags)."""
    out = tmp_path / "out"
    shutil.copytree(config_for(pipeline).output_dir, out)
    args = [a for a in pipeline if not a.startswith("--output_dir")] + [f"--output_dir={out}", f"--pick={pick}"]
    evaluate_tiger.main(args + ["--eval.examples=2", "--eval.methods=fusion,title_knn", "--eval.shown_policies=ranked",
                                "--eval.title_only=true",
                                "--num_songs=6"])
    text = (out / "evaluation_results.txt").read_text()
    for block in text.split("\n=== ")[1:]:
        title = block.split("  (playlist ")[0].split(". ", 1)[1]
        scored = re.findall(r"^ +\d+\. (.+?)  \[", block.split("\nfusion (")[1], flags=re.M)
        maker = generate_playlist.PlaylistMaker(parse_config(args + ["--num_songs=6"]))
        printed = [" - ".join(maker.catalogue.index.name(s)) for s, _ in maker.playlist(title)]
        assert printed == scored and len(printed) == 6, title


def test_the_cli_says_when_a_model_trained_on_tags_gets_none(pipeline):
    maker = generate_playlist.PlaylistMaker(parse_config(pipeline))
    assert maker.note.startswith("note: the model was trained on titles with tags")
    tagged = generate_playlist.PlaylistMaker(parse_config(pipeline + ["--extra_text=happy"]))
    assert tagged.note == ""


def test_cli_starts_without_transformers(pipeline):
    """The start path imports torch, not transformers (its T5 import cost 6-7 s of a 3 s target)."""
    code = ("import sys, generate_playlist; generate_playlist.main(sys.argv[1:]); "
            "assert 'transformers' not in sys.modules, 'transformers imported'")
    out = run([sys.executable, "-c", code, *pipeline, "--title=chill", "--num_songs=3"]).stdout
    assert sum(bool(SONG_LINE.match(line)) for line in out.splitlines()) == 3


@pytest.mark.parametrize("mode", ["beam", "sample"])
def test_generator_matches_transformers_generate(pipeline, mode):
    """The trained model through t5_runtime gives the tokens transformers' generate gives (tokenizer included)."""
    import torch
    from transformers import LogitsProcessorList

    from playlist_gen import tokens
    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.generation import load_generator
    from tests.reference import load_tiger

    cfg = config_for(pipeline)
    g = cfg.generate
    g.mode, g.num_songs, g.batch_size, g.num_beams = mode, 6, 3, 2
    gen = load_generator(cfg, load_catalogue(cfg).clusters)
    model, tok, _ = load_tiger(cfg.final_model_dir)
    titles = ["chill", "深夜emo 🌙 a much longer title with many words", "road trip", "x"]
    kw = {"num_beams": 2, "do_sample": False} if mode == "beam" else \
        {"num_beams": 1, "do_sample": True, "top_p": g.top_p, "top_k": 0}
    expected = []
    for b, start in enumerate(range(0, len(titles), 3)):
        enc = tok(titles[start:start + 3], padding=True, truncation=True, max_length=gen.max_source_len,
                  return_tensors="pt")
        torch.manual_seed(11 + b)
        seqs = model.generate(**enc, max_new_tokens=2 * 6 + 1, logits_processor=LogitsProcessorList([gen.processor(6)]),
                              **kw)
        expected += [tokens.decode(tok.convert_ids_to_tokens(r), gen.levels, gen.scheme) for r in seqs.tolist()]
    assert gen.generate(titles, g, seed=11) == expected
    assert all(len(t) == 6 for t in expected)


def _songs(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if SONG_LINE.match(line)]


def test_seeds_vary_random_picks_and_repl_ends_cleanly(pipeline, capsys, monkeypatch):
    args = pipeline + ["--title=chill", "--num_songs=6", "--pick=random"]
    generate_playlist.main(args + ["--seed=1"])
    first = _songs(capsys)
    generate_playlist.main(args + ["--seed=1"])
    assert _songs(capsys) == first  # reproducible
    generate_playlist.main(args + ["--seed=2"])
    assert _songs(capsys) != first and len(first) == 6
    for ending in ("quit", EOFError, KeyboardInterrupt):
        answers = iter(["", "party", ending])

        def fake_input(prompt, answers=answers):
            print(prompt, end="")
            a = next(answers)
            if isinstance(a, type):
                raise a
            return a
        monkeypatch.setattr("builtins.input", fake_input)
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        generate_playlist.main(pipeline + ["--num_songs=3"])
        out = capsys.readouterr().out
        assert out.count(generate_playlist.PROMPT) == 3  # asked again after the empty line
        assert sum(bool(SONG_LINE.match(line)) for line in out.splitlines()) == 3


def test_song_index_cache_follows_its_inputs(pipeline, monkeypatch):
    from playlist_gen import catalogue

    cfg = config_for(pipeline)
    cfg.song_index_path.unlink(missing_ok=True)
    built = catalogue.load_catalogue(cfg).index
    assert cfg.song_index_path.exists()
    assert all(built.cluster_songs[t] == sorted(s, key=lambda x: (-built.counts.get(x, 0), x))
               for t, s in built.cluster_songs.items())
    calls = []
    real_build = catalogue.SongIndex.build
    monkeypatch.setattr(catalogue.SongIndex, "build", lambda *a, **k: calls.append(1) or real_build(*a, **k))
    cached = catalogue.load_catalogue(cfg).index
    assert calls == [] and cached.cluster_songs == built.cluster_songs and cached.names == built.names
    train = cfg.split_path("train")
    os.utime(train, ns=(train.stat().st_atime_ns, train.stat().st_mtime_ns + 10**9))  # a new corpus
    catalogue.load_catalogue(cfg)
    assert calls == [1]


@pytest.mark.parametrize("title", ["   ", ""])
def test_a_blank_title_is_one_usage_error_not_a_prompt(pipeline, title, capsys):
    with pytest.raises(SystemExit) as e:
        generate_playlist.main(pipeline + ["--title", title])
    assert e.value.code == 2  # like every other bad option
    assert capsys.readouterr().err == ("error: --title is blank: give a title, or leave --title out to type titles "
                                       "at a prompt\n")


@pytest.mark.parametrize("arg", ["--title=\udc80\udc80", "--extra_text=a\udc80", "--seed_songs=\udcff"])
def test_arguments_that_are_not_utf8_are_one_usage_error(pipeline, arg, capsys):
    with pytest.raises(SystemExit) as e:
        generate_playlist.main(pipeline + [arg])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "is not valid UTF-8 (byte 0x" in err, err


def test_stdin_that_is_not_utf8_is_one_error_naming_the_line(pipeline, monkeypatch):
    import io

    from playlist_gen.io import PipelineError

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\x80\x80\n"), encoding="utf-8"))
    with pytest.raises(PipelineError, match=r"stdin line 1 is not valid UTF-8 \(byte 0x80"):
        generate_playlist.main(pipeline)


def test_control_characters_are_printed_escaped_and_feedback_typos_are_said(pipeline, capsys):
    from playlist_gen.session import Session

    generate_playlist.main(pipeline + ["--title=\x1b]0;pwned\x07 party", "--num_songs=2"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;pwned\\x07 party" in out
    session = Session(generate_playlist.PlaylistMaker(parse_config(pipeline + ["--num_songs=2"])))
    for typo in ("+abc", "+1,2", "-1,2"):
        assert "is not feedback: like or skip by number" in session.handle(typo)
    assert session.title is None  # no playlist was started
    assert session.handle("\udc80x").startswith("not valid UTF-8 (byte 0x80")


def test_an_unknown_option_names_the_closest_keys(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--tiger.lrr=0.1"])
    err = capsys.readouterr().err
    assert "did you mean --tiger.lr or" in err and len(err) < 200, err


def test_piped_blank_lines_are_one_error(pipeline, monkeypatch, capsys):
    from playlist_gen.io import PipelineError

    with pytest.raises(PipelineError, match=r"no title on stdin \(only blank lines\)"):
        cli(pipeline, monkeypatch, capsys, stdin="\n   \n\n")
    assert capsys.readouterr().out == ""


def test_long_title_is_shortened_and_missing_songs_are_said(pipeline, capsys):
    generate_playlist.main(pipeline + ["--title=" + "chill " * 1000, "--num_songs=500"])
    out = capsys.readouterr().out.splitlines()
    assert len(out[0]) < 140 and out[0].startswith("🎵 chill chill") and "..." in out[0]
    n = sum(bool(SONG_LINE.match(line)) for line in out)
    assert n < 500 and out[-1] == f"(only {n} of the 500 songs asked for: the catalogue has no more)"


def test_cluster_sizes_read_as_this_song_of_its_cluster(pipeline):
    from playlist_gen.catalogue import SongIndex

    maker = object.__new__(generate_playlist.PlaylistMaker)
    maker.cfg = config_for(pipeline)
    maker.cfg.generate.num_songs = 2
    maker.catalogue = type("C", (), {"index": SongIndex({(1, 2): ["a"], (3, 4): ["b", "c"]}, {}, {})})()
    lines = maker.format("t", [("a", (1, 2)), ("b", (3, 4))]).splitlines()
    assert lines[1].endswith("(cluster 1-2: its only song)") and lines[2].endswith("(cluster 3-4: 1 of 2 songs)")


def test_the_prompt_gets_no_info_lines(pipeline, monkeypatch, caplog, capsys):
    import logging

    cfg = config_for(pipeline)
    cfg.song_index_path.unlink(missing_ok=True)  # loading logs "building the song index" at INFO
    caplog.set_level(logging.INFO)
    answers = iter(["chill", "quit"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    generate_playlist.main(pipeline + ["--num_songs=2"])
    assert [r for r in caplog.records if r.levelno < logging.WARNING] == []
    assert logging.getLogger().level == logging.INFO  # restored after the prompt
    assert sum(bool(SONG_LINE.match(line)) for line in capsys.readouterr().out.splitlines()) == 2


def _playlists(out: str) -> list[list[tuple[int, str]]]:
    """The printed playlists, each as (number, `name - artist`) per song."""
    lists = []
    for line in out.replace(generate_playlist.PROMPT, "\n").splitlines():
        if line.startswith("🎵"):
            lists.append([])
        elif SONG_LINE.match(line):
            n, song = re.match(r"^\s*(\d+)\. (.*) \((?:cluster|no cluster)", line).groups()
            lists[-1].append((int(n), song))
    return lists


def test_repl_feedback_through_stdin_likes_skips_more_new(pipeline, monkeypatch, capsys):
    script = "chill\n+1 +2\n-3\nmore\nchill\nnew\nchill\n+99\nexit\n"
    for f in Path(config_for(pipeline).output_dir).glob("feedback.db*"):  # this session's rows only
        f.unlink()
    out = cli([*pipeline, "--interactive", "--num_songs=6", "--pick=popular"], monkeypatch, capsys, stdin=script)
    assert "+3 +7" in out and "喜欢" in out  # the feedback help, in Chinese and English
    first, more, seeded, fresh = _playlists(out)
    names = [s for _, s in first]
    liked, skipped = names[:2], names[2]
    assert len(first) == 6 and f"liked 1. {names[0]}; liked 2. {names[1]}" in out and f"skipped 3. {skipped}" in out
    assert [n for n, _ in more] == list(range(7, 7 + len(more))) and more  # the next songs of the same playlist
    assert not {s for _, s in more} & set(names)
    assert not {s for _, s in seeded} & {*liked, skipped}  # liked songs seed it, never shown again; skipped gone
    assert names[0] in {s for _, s in fresh} and skipped not in {s for _, s in fresh}  # `new` forgot the likes only
    assert "no song 99 here: the playlist shows songs 1-6" in out
    from playlist_gen.feedback_log import read_events

    events = read_events(config_for(pipeline).feedback_db_path)  # the prompt keeps what the service keeps
    assert {e["source"] for e in events} == {"cli"}
    assert [e["action"] for e in events if e["action"] != "shown"] == ["like", "like", "skip", "more", "new"]
    assert sum(e["action"] == "shown" for e in events) == len(first) + len(more) + len(seeded) + len(fresh)


def test_seed_songs_by_name_are_matched_said_and_left_out(pipeline, monkeypatch, capsys):
    first = _playlists(cli([*pipeline, "--title=chill", "--num_songs=4", "--pick=popular"], monkeypatch, capsys))[0]
    seed = first[0][1]
    out = cli([*pipeline, "--title=chill", "--num_songs=4", "--pick=popular", "--explain",
               f"--seed_songs={seed.upper()}; zzqx wvkj"], monkeypatch, capsys)
    assert f"seed {seed.upper()!r} -> {seed}" in out  # case forgiven, and the match is printed
    assert "seed 'zzqx wvkj': no song matched" in out
    [songs] = _playlists(out)
    assert len(songs) == 4 and seed not in {s for _, s in songs}
    assert out.count("       why: ") == 4


def test_explain_with_random_clusters_is_refused_before_loading(pipeline, monkeypatch):
    from playlist_gen import session
    from playlist_gen.io import PipelineError

    monkeypatch.setattr(session.PlaylistMaker, "__init__", lambda *a: pytest.fail("loaded before the check"))
    with pytest.raises(PipelineError, match="--explain needs a recommender that scores songs"):
        generate_playlist.main(pipeline + ["--title=chill", "--explain", "--recommend.method=random_cluster"])


def test_with_seed_songs_the_default_table_has_cooccurrence(pipeline, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(config_for(pipeline).output_dir, out)
    args = [a for a in pipeline if not a.startswith("--output_dir")] + [f"--output_dir={out}"]
    evaluate_tiger.main(args + EVAL + ["--eval.seed_songs=1", "--eval.shown_policies=ranked"])
    assert "cooccurrence" in json.loads((out / "metrics.json").read_text())
