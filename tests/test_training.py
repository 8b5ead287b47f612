import contextlib
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from test_corpus import config_for, make_world

import prepare_corpus
import train_tiger
from config import RUN_INFO_FILE
from playlist_gen import checkpoints, examples, fast_dropout, losses, modeling, tokens, training
from playlist_gen.io import PipelineError
from tests.reference import load_tiger

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--tiger.d_model=32", "--tiger.d_ff=64", "--tiger.num_layers=1", "--tiger.num_decoder_layers=1",
        "--tiger.num_heads=2", "--tiger.d_kv=16", "--tiger.batch_size=16", "--tiger.logging_steps=2",
        "--tiger.sp_vocab_size=320", "--tiger.threads=1", "--tiger.ensemble=1"]  # one model unless a test says
SEMANTIC = tokens.vocabulary([8, 8])


@pytest.fixture(autouse=True)
def undrawn_loss_plot(request, monkeypatch):
    """The trainings here write loss_curve.png empty: matplotlib drew it in ~0.13 s of a ~1 s tiny training, 3 s of
    this module. Tests marked `draws` draw it, as do the end-to-end test and the other modules' trainings."""
    if request.node.get_closest_marker("draws") is None:
        monkeypatch.setattr(losses, "png_plot", undrawn_plot)


@contextlib.contextmanager
def undrawn_plot(path, *args):
    yield mock.MagicMock()  # the axes: takes every call
    Path(path).write_bytes(b"")


@pytest.fixture(autouse=True)
def frozen_gc():
    """What earlier tests left alive is frozen (tests/conftest.py does so for the imports): the gc.collect() that
    accelerate runs after every training then walks only this test's objects."""
    gc.collect()
    gc.freeze()


@pytest.fixture
def corpus_world(tmp_path):
    args = make_world(tmp_path) + ["--corpus.max_songs=8", "--corpus.val_fraction=0.15"]
    prepare_corpus.main(args)
    return args


def test_tokenizer_keeps_semantic_tokens_whole_and_never_unk(tmp_path):
    from transformers import AutoTokenizer

    tok = modeling.scratch_tokenizer(["chill vibes", "workout mix", "road trip 2017"] * 5, SEMANTIC, 500, True, 0)
    tok.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    target = "<a_3> <b_7> <a_0> <b_0>"
    ids = tok(target)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == target.split() + ["</s>"]
    assert len(set(tok.convert_tokens_to_ids(SEMANTIC))) == len(SEMANTIC)
    for text in ["深夜emo 🌙", "你好世界 🎧🔥 mixed Ünïcödé", "ｆｕｌｌ　ｗｉｄｔｈ", "x<a_1>y"]:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == \
            unicodedata.normalize("NFKC", text).lower().replace(" ", "")


def test_scratch_tokenizer_gets_a_piece_for_every_character_the_titles_use():
    """--tiger.sp_vocab_size below the number of distinct characters used to end in SentencePiece's traceback."""
    titles = [chr(0x4E00 + i) * 2 + " 歌单" for i in range(400)]  # 400 distinct Chinese characters
    tok = modeling.scratch_tokenizer(titles, SEMANTIC, 320, True, 0)
    assert tok.unk_token_id not in tok(titles[-1])["input_ids"] and len(tok) > 400


def test_title_blind_loss_is_unigram_cross_entropy():
    train, val = ["<a_0> <b_1>", "<a_0> <b_0>"], ["<a_0> <b_1>"]
    semantic = tokens.vocabulary([2, 2])  # 4 tokens + </s>: denominator = 6 train tokens + 5
    expected = -(math.log(3 / 11) + math.log(2 / 11) + math.log(3 / 11)) / 3
    assert losses.title_blind_loss(train, val, semantic) == pytest.approx(expected)


def test_title_blind_loss_of_tuples_is_each_level_given_the_earlier_ones():
    train, val = ["<a_0> <b_1> <a_0> <b_0>", "<a_1> <b_1>"], ["<a_0> <b_1> <a_1> <b_0>"]
    semantic = tokens.vocabulary([2, 2])  # 2 tokens per level
    # a_0: 2 of 3 tuples (+1 / +2); b_1 after a_0: 1 of 2; a_1: 1 of 3; b_0 after a_1: 0 of 1
    expected = -(math.log(3 / 5) + math.log(2 / 4) + math.log(2 / 5) + math.log(1 / 3)) / 4
    assert losses.title_blind_loss(train, val, semantic, "tuples", 2) == pytest.approx(expected)
    with pytest.raises(PipelineError, match="<c_0>"):
        losses.title_blind_loss(train, ["<c_0> <b_0>"], semantic, "tuples", 2)


def test_validation_is_a_seeded_sample_of_at_most_val_playlists():
    import pandas as pd

    df = pd.DataFrame({"glid": [str(i) for i in range(50)]})
    a, b = examples.sample_rows(df, 10, seed=3), examples.sample_rows(df, 10, seed=3)
    assert len(a) == 10 and list(a["glid"]) == list(b["glid"])  # the same rows for every member and re-run
    assert sorted(a["glid"], key=int) == list(a["glid"])  # in file order
    assert list(examples.sample_rows(df, 10, seed=4)["glid"]) != list(a["glid"])
    assert examples.sample_rows(df, 0, seed=3) is df and examples.sample_rows(df, 50, seed=3) is df


@pytest.mark.draws
def test_train_single_process_and_reload(corpus_world):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    train_tiger.main(corpus_world + TINY + ["--tiger.max_steps=12", "--tiger.eval_steps=4", "--tiger.save_steps=4"])
    cfg = config_for(corpus_world)
    summary = json.loads(cfg.train_summary_path.read_text())
    assert summary["steps"] == 12 and summary["world_size"] == 1
    assert summary["title_blind_loss"] > 0 and summary["val_loss"] > 0
    # the final model is the best checkpoint, and our per-token loss agrees with the Trainer's
    assert summary["val_loss"] == pytest.approx(summary["best_eval_loss"], rel=0.02)
    model = AutoModelForSeq2SeqLM.from_pretrained(cfg.final_model_dir)
    tok = AutoTokenizer.from_pretrained(cfg.final_model_dir)
    assert tok.convert_tokens_to_ids("<b_7>") != tok.unk_token_id and model.config.vocab_size == len(tok)
    model, tok, meta = load_tiger(cfg.final_model_dir)
    assert meta["codebook_sizes"] == [8, 8] and meta["token_scheme"] == "level" and meta["max_songs"] == 8
    assert meta["semantic_ids"]["method"] == "fixture"
    out = model.generate(**tok(["深夜emo 🌙"], return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert len(tok.convert_ids_to_tokens(out[0])) >= 2
    rows = cfg.loss_curve_csv_path.read_text().splitlines()
    assert rows[0] == "step,epoch,train_loss,val_loss" and len(rows) >= 4
    assert cfg.loss_curve_png_path.read_bytes()[:4] == b"\x89PNG"


def test_select_by_ndcg_keeps_the_checkpoint_of_the_best_validation_ranking(corpus_world):
    """--tiger.select_by=ndcg: every evaluation scores the validation playlists' clusters, the best one is kept, and
    its number is what generation's cluster distribution gives for the same playlists."""
    from playlist_gen.corpus import read_split
    from playlist_gen.generation import load_generator
    from playlist_gen.metrics import ndcg_at_k
    from playlist_gen.semantic_ids import load_semantic_ids

    train_tiger.main(corpus_world + TINY + ["--tiger.max_steps=12", "--tiger.eval_steps=4", "--tiger.save_steps=4",
                                            "--tiger.select_by=ndcg", "--tiger.lr=0.01"])
    cfg = config_for(corpus_world)
    summary = json.loads(cfg.train_summary_path.read_text())
    state = json.loads((cfg.checkpoint_dir / "checkpoint-12" / "trainer_state.json").read_text())
    evals = [(e["step"], e["eval_cluster_ndcg"]) for e in state["log_history"] if "eval_cluster_ndcg" in e]
    assert [step for step, _ in evals] == [4, 8, 12] and summary["selected_by"] == "eval_cluster_ndcg"
    best = max(evals, key=lambda e: (e[1], -e[0]))  # the first of the best
    assert summary["best_step"] == best[0] and summary["best_eval_cluster_ndcg"] == pytest.approx(best[1])
    clusters = set(load_semantic_ids(cfg)[0].values())
    val = read_split(cfg, "val")
    gen = load_generator(cfg, clusters)
    log_probs = gen.cluster_log_probs(list(val["title"]))
    ranked = [[gen.trie.clusters[i] for i in np.argsort(-row, kind="stable")[:100]] for row in log_probs]
    ndcg = np.mean([ndcg_at_k(r, tokens.decode(t, 2), 100) for r, t in zip(ranked, val["target"])])
    assert ndcg == pytest.approx(best[1], abs=1e-3)


def test_local_pretrained_t5_gets_semantic_tokens(corpus_world, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in "abcdefghijklmn"]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0)
    T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8,
                                        decoder_start_token_id=0)).save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    train_tiger.main(corpus_world + TINY + [f"--tiger.model_name={tmp_path / 't5'}", "--tiger.max_steps=2",
                                            "--tiger.eval_steps=2", "--tiger.save_steps=2"])
    model, tok, meta = load_tiger(config_for(corpus_world).final_model_dir)
    assert model.config.d_model == 16 and model.get_input_embeddings().num_embeddings == len(tok) == len(pieces) + 16
    assert tok.convert_ids_to_tokens(tok("<a_3> <b_7>")["input_ids"]) == ["<a_3>", "<b_7>", "</s>"]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_token_mean_loss_matches_cross_entropy_in_value_and_gradient(smoothing):
    import torch

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 40, requires_grad=True)
    labels = torch.randint(0, 40, (3, 5))
    labels[1, 2:] = -100  # padding
    loss = losses.token_mean_loss({"logits": logits}, labels, num_items_in_batch=torch.tensor(12),
                                  smoothing=smoothing)
    (grad,) = torch.autograd.grad(loss, logits)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum",
                                                 label_smoothing=smoothing) / 12
    (expected_grad,) = torch.autograd.grad(expected, logits)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(grad, expected_grad, atol=1e-7) and grad[1, 2:].abs().sum() == 0


def test_fast_dropout_drops_p_scales_the_rest_and_follows_the_seed():
    import torch

    x = torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(3)
    y = fast_dropout.fast_dropout(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(y, fast_dropout.fast_dropout(x, 0.1))
    assert (y == 0).float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert y.unique().tolist() == [0.0, pytest.approx(1 / 0.9)]
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad, y.detach())  # gradient through the same scaled mask
    assert fast_dropout.fast_dropout(x, 0.1, training=False) is x


def test_fast_cpu_dropout_keeps_the_model_and_its_outputs():
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=60, d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8, dropout_rate=0.1,
                      decoder_start_token_id=0, pad_token_id=0)
    plain, fast = T5ForConditionalGeneration(config), T5ForConditionalGeneration(config)
    fast.load_state_dict(plain.state_dict())
    fast_dropout.use_fast_cpu_dropout(fast)
    assert not any(type(m) is torch.nn.Dropout for m in fast.modules())
    assert fast.state_dict().keys() == plain.state_dict().keys()
    batch = {"input_ids": torch.randint(3, 60, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long),
             "labels": torch.randint(3, 60, (3, 9))}
    batch["attention_mask"][0, 4:] = 0
    plain.eval(), fast.eval()
    assert torch.allclose(plain(**batch).logits, fast(**batch).logits, atol=1e-5)  # eval: the same function
    fast.train()
    torch.manual_seed(5)
    first = fast(**batch).logits
    torch.manual_seed(5)
    assert torch.equal(first, fast(**batch).logits) and not torch.allclose(first, plain(**batch).logits)


def test_checkpoint_folder_resumes_only_complete_matching_checkpoints(tmp_path):
    ckpt = tmp_path / "ckpt"
    for step, complete in ((5, True), (10, True), (15, False)):
        (ckpt / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (ckpt / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    fp = {"corpus": "abc", "d_model": 32}
    (ckpt / RUN_INFO_FILE).write_text(json.dumps(fp))
    assert checkpoints.prepare_checkpoint_dir(ckpt, fp, resume=True) == ckpt / "checkpoint-10"
    assert not (ckpt / "checkpoint-15").exists()  # killed while saving
    with pytest.raises(PipelineError, match=r"checkpoints of another run \(tiger.d_model 32 -> 64\): re-run with"):
        checkpoints.prepare_checkpoint_dir(ckpt, {**fp, "d_model": 64}, resume=True)
    assert checkpoints.prepare_checkpoint_dir(ckpt, {**fp, "d_model": 64}, resume=False) is None
    assert list(ckpt.iterdir()) == [ckpt / RUN_INFO_FILE]


def test_checkpoints_from_before_an_option_existed_resume_at_its_default(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "checkpoint-5").mkdir(parents=True)
    (ckpt / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (ckpt / RUN_INFO_FILE).write_text(json.dumps({"corpus": "abc"}))  # written before e5_prefix existed
    assert checkpoints.prepare_checkpoint_dir(ckpt, {"corpus": "abc", "e5_prefix": 0}, True) == ckpt / "checkpoint-5"
    with pytest.raises(PipelineError, match="tiger.e5_prefix 0 -> 4"):
        checkpoints.prepare_checkpoint_dir(ckpt, {"corpus": "abc", "e5_prefix": 4}, resume=True)


def test_loading_a_missing_model_says_what_to_run(tmp_path):
    with pytest.raises(PipelineError, match="train_tiger.py"):
        modeling.load_tiger_runtime(tmp_path / "nothing")


def interrupt_after_checkpoint(monkeypatch, step: int | None = None):
    """Make training raise KeyboardInterrupt right after checkpoint-`step` (the first, if None) is completely
    written, as Ctrl-C would; returns the real make_trainer, to put back for the resumed run."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if step is None or state.global_step == step:
                raise KeyboardInterrupt

    def interrupted(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        trainer.add_callback(Interrupt())
        return trainer

    make_trainer = training.make_trainer
    monkeypatch.setattr(training, "make_trainer", interrupted)
    return make_trainer


def test_a_resume_with_other_run_options_is_refused_naming_them(corpus_world, monkeypatch):
    """Issue 16: a resume with --tiger.lr=0.02 --tiger.batch_size=16 --seed=7 continued the old schedule while the
    saved config recorded the new options."""
    argv = corpus_world + TINY + ["--tiger.max_steps=12", "--tiger.eval_steps=4", "--tiger.save_steps=4"]
    make_trainer = interrupt_after_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_tiger.main(argv)
    monkeypatch.setattr(training, "make_trainer", make_trainer)
    with pytest.raises(PipelineError, match=r"another run \(tiger.lr 0.002 -> 0.02, tiger.batch_size 16 -> 8, "
                                            r"seed 42 -> 7\): .* --tiger.resume=false"):
        train_tiger.main(argv + ["--tiger.lr=0.02", "--tiger.batch_size=8", "--seed=7"])


def test_interrupted_training_resumes_from_last_checkpoint(corpus_world, monkeypatch):
    argv = corpus_world + TINY + ["--tiger.max_steps=12", "--tiger.eval_steps=4", "--tiger.save_steps=4"]
    make_trainer = interrupt_after_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_tiger.main(argv)
    cfg = config_for(corpus_world)
    assert checkpoints.complete_checkpoint(cfg.checkpoint_dir).name == "checkpoint-4"
    assert not cfg.final_model_dir.exists()
    monkeypatch.setattr(training, "make_trainer", make_trainer)
    train_tiger.main(argv)  # the same command again
    summary = json.loads(cfg.train_summary_path.read_text())
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 12
    steps = [int(row.split(",")[0]) for row in cfg.loss_curve_csv_path.read_text().splitlines()[1:]]
    assert steps[0] == 2 and steps[-1] == 12  # the curve keeps the steps before the interruption


@pytest.mark.parametrize("objective,batch,kill,steps", [("sequence", 16, 12, 16), ("tuples", 64, 20, 24),
                                                      ("tuples:4", 64, 20, 24)])
def test_resumed_mid_epoch_equals_uninterrupted(corpus_world, objective, batch, kill, steps):
    """Killed after a checkpoint in the middle of the second epoch and resumed: the same losses and the same
    weights as a run never interrupted. (The length-grouped sampler of `sequence` drew each epoch's order from
    the global RNG, whose state at the resumed epoch's start was not the uninterrupted run's.) tuples:4 is the
    tuples objective with up to 4 entries per title pass. The kill is the uninterrupted run's checkpoints after
    `kill` removed (a run killed there leaves the same bytes: training is deterministic; a real Ctrl-C is
    test_interrupted_training_resumes_from_last_checkpoint's)."""
    objective, _, per_pass = objective.partition(":")
    argv = corpus_world + TINY + [f"--tiger.tuples_per_pass={per_pass or 1}", f"--tiger.objective={objective}",
                                  f"--tiger.batch_size={batch}",
                                  f"--tiger.max_steps={steps}", "--tiger.eval_steps=4", "--tiger.save_steps=4",
                                  "--tiger.save_total_limit=10", "--tiger.dropout=0.1"]
    cfg = config_for(corpus_world)
    train_tiger.main(argv)
    whole = cfg.loss_curve_csv_path.read_text()
    weights = (cfg.checkpoint_dir / f"checkpoint-{steps}" / "model.safetensors").read_bytes()
    epoch_at = {int(r.split(",")[0]): float(r.split(",")[1]) for r in whole.splitlines()[1:]}
    assert 1 < epoch_at[kill] < 2  # killed in the middle of the second epoch

    for later in range(kill + 4, steps + 1, 4):
        shutil.rmtree(cfg.checkpoint_dir / f"checkpoint-{later}")
    shutil.rmtree(cfg.final_model_dir)  # killed before the final model was written
    train_tiger.main(argv)
    assert json.loads(cfg.train_summary_path.read_text())["resumed_from_step"] == kill
    assert cfg.loss_curve_csv_path.read_text() == whole
    assert (cfg.checkpoint_dir / f"checkpoint-{steps}" / "model.safetensors").read_bytes() == weights


def test_thread_count_is_fixed_and_recorded(corpus_world, monkeypatch):
    """--tiger.threads=0 used to pick 1 thread when the load average was high (other weights); now it is torch's
    default whatever the load, and the count used is in train_summary.json and the saved config."""
    import torch

    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    argv = [a for a in corpus_world + TINY if not a.startswith("--tiger.threads")] + ["--tiger.threads=0",
                                                                                    "--tiger.max_steps=2"]
    try:
        train_tiger.main(argv + ["--tiger.eval_steps=2", "--tiger.save_steps=2"])
    finally:
        torch.set_num_threads(before)  # the worker's other tests run on one thread (tests/conftest.py)
    cfg = config_for(corpus_world)
    assert json.loads(cfg.train_summary_path.read_text())["threads"] == 2
    assert json.loads(cfg.config_path("train_tiger").read_text())["tiger"]["threads"] == 2


def test_checkpoint_folder_of_someone_else_is_never_deleted(corpus_world, capsys):
    cfg = config_for(corpus_world)
    cfg.checkpoint_dir.mkdir(parents=True)
    (cfg.checkpoint_dir / "notes.txt").write_text("mine")
    argv = corpus_world + TINY + ["--tiger.max_steps=2", "--tiger.eval_steps=2", "--tiger.save_steps=2"]
    with pytest.raises(PipelineError, match="holds files train_tiger.py did not write"):
        train_tiger.main(argv + ["--tiger.resume=false"])
    assert (cfg.checkpoint_dir / "notes.txt").read_text() == "mine"
    (cfg.checkpoint_dir / "notes.txt").unlink()
    train_tiger.main(argv)
    (cfg.checkpoint_dir / "notes.txt").write_text("mine")  # beside our checkpoints: starting over keeps it
    with pytest.raises(SystemExit):  # a bad option is refused before anything is deleted
        train_tiger.main(argv + ["--tiger.resume=false", "--tiger.model_name=typo"])
    assert "--tiger.model_name='typo'" in capsys.readouterr().err
    assert (cfg.checkpoint_dir / "checkpoint-2").exists()
    train_tiger.main(argv + ["--tiger.resume=false"])
    assert (cfg.checkpoint_dir / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_damaged_checkpoint_is_named_with_what_to_do(corpus_world, name):
    argv = corpus_world + TINY + ["--tiger.max_steps=2", "--tiger.eval_steps=2", "--tiger.save_steps=2"]
    train_tiger.main(argv)
    path = config_for(corpus_world).checkpoint_dir / "checkpoint-2" / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    # as if killed after the checkpoint, before the final model (a finished model is kept, unread)
    shutil.rmtree(config_for(corpus_world).final_model_dir)
    with pytest.raises(PipelineError, match=rf"checkpoint-2/{name} is damaged .*--tiger.resume=false to start over"):
        train_tiger.main(argv)


def test_training_ends_without_the_tied_weights_warning(corpus_world, caplog):
    train_tiger.main(corpus_world + TINY + ["--tiger.max_steps=4", "--tiger.eval_steps=2", "--tiger.save_steps=2"])
    assert "There were missing keys" not in caplog.text
    cfg = config_for(corpus_world)
    best = json.loads(cfg.train_summary_path.read_text())["best_step"]
    from safetensors.torch import load_file

    final = load_file(cfg.final_model_dir / "model.safetensors")
    kept = load_file(cfg.checkpoint_dir / f"checkpoint-{best}" / "model.safetensors")
    assert final.keys() == kept.keys() and all(torch.equal(final[k], kept[k]) for k in final)  # the best was loaded
    assert modeling.tied_parameter_names(load_tiger(config_for(corpus_world).final_model_dir)[0]) == {
        "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}


def test_extra_dropout_trains_some_examples_on_the_title_alone():
    import numpy as np

    targets = [np.array([[5, 6], [7, 8]])] * 50
    full, title = [[1, 2, 3, 9, 0]] * 50, [[1, 2, 0]] * 50
    ex = examples.TargetExamples(full, targets, "tuples", eos=0, seed=3, title_ids=title, extra_dropout=0.3)
    inputs = [ex[i]["input_ids"] for i in range(len(ex))]
    share = sum(x == title[0] for x in inputs) / len(inputs)
    assert 0.15 < share < 0.45 and set(map(tuple, inputs)) == {tuple(full[0]), tuple(title[0])}
    assert inputs == [ex[i]["input_ids"] for i in range(len(ex))]  # seeded per example: the same on resume
    kept = examples.TargetExamples(full, targets, "tuples", eos=0, seed=3, title_ids=title, extra_dropout=0.0)
    assert all(kept[i]["input_ids"] == full[0] for i in range(len(kept)))


def test_grouped_titles_serve_every_entry_once_per_epoch_in_batches_of_one_length():
    """--tiger.group_titles: each epoch serves every entry once, in batches of inputs of (nearly) one length, in an
    order drawn from (seed, epoch) alone, so a resumed run gets the same batches; without it, order is untouched."""
    import numpy as np

    rng = np.random.default_rng(0)
    inputs = [[1] * int(n) for n in rng.integers(1, 20, 300)]
    targets = [np.array([[5, 6]] * int(n)) for n in rng.integers(1, 6, 300)]

    def served(ex):
        return [(ex[i]["input_ids"], ex[i]["labels"]) for i in range(len(ex))]

    def padding(order, batch=32):  # share of the encoder's positions that are padding, over the epoch's batches
        lengths = np.array([len(x) for x, _ in order])
        batches = [lengths[j:j + batch] for j in range(0, len(lengths), batch)]
        return 1 - lengths.sum() / sum(len(b) * b.max() for b in batches)

    grouped = examples.TargetExamples(inputs, targets, "tuples", eos=0, seed=3, group_titles=True)
    grouped.group_by_length(32)
    first = served(grouped)
    plain = served(examples.TargetExamples(inputs, targets, "tuples", eos=0, seed=3))
    assert sorted(map(str, first)) == sorted(map(str, plain))
    shuffled = [plain[i] for i in rng.permutation(len(plain))]  # what the Trainer's shuffle serves
    assert padding(first) < 0.15 < 0.4 < padding(shuffled)  # measured 0.11 and ~0.5
    grouped.set_epoch(1)
    second = served(grouped)
    assert second != first and sorted(map(str, second)) == sorted(map(str, first))
    again = examples.TargetExamples(inputs, targets, "tuples", eos=0, seed=3, group_titles=True)
    again.group_by_length(32)
    again.set_epoch(1)
    assert served(again) == second


def test_tags_as_titles_trains_some_examples_on_one_tag_alone():
    import numpy as np

    targets = [np.array([[5, 6], [7, 8]])] * 100
    full, title = [[1, 2, 3, 9, 0]] * 100, [[1, 2, 0]] * 100
    tags = [[[3, 0], [9, 0]]] * 100
    ex = examples.TargetExamples(full, targets, "tuples", eos=0, seed=3, title_ids=title, extra_dropout=0.3,
                                 tag_ids=tags, tags_as_titles=0.25)
    inputs = [tuple(ex[i]["input_ids"]) for i in range(len(ex))]
    assert {x: inputs.count(x) for x in set(inputs)}.keys() == {(1, 2, 3, 9, 0), (1, 2, 0), (3, 0), (9, 0)}
    assert 0.15 < (inputs.count((3, 0)) + inputs.count((9, 0))) / len(inputs) < 0.35
    assert inputs == [tuple(ex[i]["input_ids"]) for i in range(len(ex))]  # seeded per example: the same on resume
    off = examples.TargetExamples(full, targets, "tuples", eos=0, seed=3, title_ids=title, extra_dropout=0.3)
    # the tag draw is a second number of the same seeded stream: extra_dropout keeps the examples it had
    assert [x for x in inputs if len(x) > 2] == [tuple(off[i]["input_ids"]) for i in range(len(off))
                                                 if inputs[i] not in ((3, 0), (9, 0))]


def test_encode_split_reads_each_extra_word_as_a_tag_title():
    import pandas as pd

    from config import TigerConfig

    class WordTokenizer:  # one id per word, then </s> = 0
        eos_token_id = 0
        words = {"<a_1>": 1, "<b_2>": 2}

        def __call__(self, texts, truncation, max_length):
            return {"input_ids": [[self.words.setdefault(w, len(self.words) + 1) for w in t.split()] + [0]
                                  for t in texts]}

        def get_vocab(self):
            return self.words

    tok = WordTokenizer()
    df = pd.DataFrame({"title": ["night drive | 华语 流行", "chill"], "target": ["<a_1> <b_2>", "<a_1> <b_2>"]})
    tc = TigerConfig(tags_as_titles=0.5)
    ex = examples.encode_split(tok, df, tc, levels=2, seed=0)
    assert ex.tag_ids == [[[tok.words["华语"], 0], [tok.words["流行"], 0]], []]
    assert examples.encode_split(tok, df, tc, levels=2, seed=0, train=False).tags_as_titles == 0  # training only


def test_a_second_training_on_the_same_model_dir_is_refused_and_kill_9_frees_it(corpus_world, tmp_path):
    import signal
    import time

    from playlist_gen.io import exclusive

    models = next(a.split("=", 1)[1] for a in corpus_world if a.startswith("--model_dir="))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from playlist_gen.io import exclusive\n"
                               f"with exclusive({models!r}, 'train_tiger.py'):\n print('held', flush=True); "
                               "time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(PipelineError, match=f"{models} is in use by train_tiger.py \\(train_tiger.py, pid "):
        train_tiger.main(corpus_world + ["--tiger.max_steps=1"])
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    time.sleep(0.1)
    with exclusive(models, "train_tiger.py"):  # nothing stuck after kill -9
        pass


def test_on_a_busy_machine_training_threads_sleep_at_barriers_unless_the_user_chose(monkeypatch):
    from playlist_gen import device

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(device, "busy_cores", lambda: 1.5)
    assert device.share_cores_gracefully() is None and "OMP_WAIT_POLICY" not in os.environ  # torch read it already
    monkeypatch.delitem(sys.modules, "torch")  # as in train_tiger.py's main() before torch is imported
    monkeypatch.setattr(device, "busy_cores", lambda: 0.4)
    assert device.share_cores_gracefully() is None and "OMP_WAIT_POLICY" not in os.environ  # idle: spin, fastest
    monkeypatch.setattr(device, "busy_cores", lambda: 1.5)
    assert device.share_cores_gracefully() == "PASSIVE" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert device.share_cores_gracefully() is None and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's


def test_busy_cores_sees_a_busy_process():
    from playlist_gen import device

    idle = device.busy_cores(0.3)
    other = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = device.busy_cores(0.3)
    finally:
        other.kill()
    assert busy > 0.6 and busy > idle - 0.5, (idle, busy)  # one core taken (the rest of the machine varies)


def test_one_title_pass_scores_each_tuple_as_its_own_example():
    """TitlePassT5 with `owner` (each title encoded once, its tuples as decoder rows) gives the loss and gradients of
    the same (title, tuple) pairs as separate T5 examples."""
    from transformers import DataCollatorForSeq2Seq, T5Config

    from playlist_gen.title_pass import TitlePassCollator, TitlePassT5

    torch.manual_seed(0)
    config = T5Config(vocab_size=40, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1,
                      dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = TitlePassT5(config)
    titles = [[5, 6, 7, 1], [8, 9, 1]]
    tuples = [[[20, 30], [21, 31], [22, 30]], [[23, 33]]]

    base = DataCollatorForSeq2Seq(None, model=model, label_pad_token_id=-100)  # for ungrouped examples only
    grouped = TitlePassCollator(base, 0, 0)([{"input_ids": t, "attention_mask": [1] * len(t), "labels": ls}
                                             for t, ls in zip(titles, tuples)])
    assert grouped["owner"].tolist() == [0, 0, 0, 1] and grouped["input_ids"].shape == (2, 4)

    def loss_and_grads(batch):
        model.zero_grad()
        labels = batch.pop("labels")
        loss = losses.token_mean_loss(model(**batch), labels)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    one, g1 = loss_and_grads(grouped)
    pairs = [(t, tup) for t, ls in zip(titles, tuples) for tup in ls]
    ids = torch.zeros(len(pairs), 4, dtype=torch.long)
    for r, (t, _) in enumerate(pairs):
        ids[r, :len(t)] = torch.tensor(t)
    labels = torch.tensor([tup for _, tup in pairs])
    separate = {"input_ids": ids, "attention_mask": (ids > 0).long(), "labels": labels,
                "decoder_input_ids": torch.cat([torch.zeros(len(pairs), 1, dtype=torch.long), labels[:, :-1]], 1)}
    two, g2 = loss_and_grads(separate)
    assert one == pytest.approx(two, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))


def test_title_passes_group_each_entry_once():
    targets = [np.arange(2 * n).reshape(n, 2) for n in (5, 1, 8)]
    ex = examples.TargetExamples([[3, 1]] * 3, targets, "tuples", eos=1, seed=7, per_pass=3)
    assert len(ex) == 2 + 1 + 3
    items = [sorted(map(tuple, ex[i]["labels"])) for i in range(len(ex))]
    assert all(1 <= len(it) <= 3 for it in items)
    by_playlist = [sorted(t for it in items[a:b] for t in it) for a, b in ((0, 2), (2, 3), (3, 6))]
    assert by_playlist == [sorted(map(tuple, t.tolist())) for t in targets]  # every entry once
    other = examples.TargetExamples([[3, 1]] * 3, targets, "tuples", eos=1, seed=8, per_pass=3)
    assert [sorted(map(tuple, other[i]["labels"])) for i in range(len(ex))] != items  # seeded groups


def test_e5_prefix_reaches_the_model_in_training_and_in_generation(corpus_world, monkeypatch):
    """--tiger.e5_prefix=2: every training text (with tags, and the title alone for tag dropout) is embedded into the
    e5 cache that e5 kNN reads, the saved model says it reads a prefix, and its distribution over clusters follows
    the e5 vectors given at generation."""
    import pandas as pd

    from playlist_gen import recommend
    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.generation import load_generator
    from playlist_gen.text import EXTRA_SEPARATOR

    train_tiger.main(corpus_world + TINY + ["--tiger.max_steps=8", "--tiger.eval_steps=4", "--tiger.save_steps=4",
                                            "--tiger.e5_prefix=2"])
    cfg = config_for(corpus_world)
    assert json.loads((cfg.final_model_dir / "config.json").read_text())["e5_prefix"] == 2
    texts = pd.read_csv(cfg.split_path("train"), sep="\t", keep_default_na=False)["title"].tolist()
    with np.load(cfg.e5_cache_path) as z:
        cached = set(z["texts"].tolist())
    assert any(EXTRA_SEPARATOR in t for t in texts)
    assert set(texts) | {t.split(EXTRA_SEPARATOR, 1)[0] for t in texts} <= cached
    from safetensors.torch import load_file

    weights = load_file(cfg.final_model_dir / "model.safetensors")  # the standardisation of the training texts
    vectors = recommend.train_embeddings(texts, cfg.e5_cache_path)
    assert np.allclose(weights["e5_mean"].numpy(), vectors.mean(axis=0), atol=1e-5)
    assert np.allclose(weights["e5_scale"].numpy(), 1 / (vectors.std(axis=0) + 1e-4), rtol=1e-3)
    gen = load_generator(cfg, load_catalogue(cfg).clusters)
    titles = ["chill 1", "深夜emo 🌙"]
    logp = gen.cluster_log_probs(titles)
    assert np.allclose(np.logaddexp.reduce(logp, axis=1), 0, atol=1e-4)
    monkeypatch.setattr(recommend, "embed", lambda texts: np.roll(recommend.encode(texts), 1, axis=1))
    shuffled = load_generator(cfg, load_catalogue(cfg).clusters)  # a new one: a generator remembers recent texts
    assert not np.allclose(shuffled.cluster_log_probs(titles), logp, atol=1e-3)
    assert np.array_equal(gen.cluster_log_probs(titles), logp)


def test_an_ensemble_averages_models_trained_with_other_init_seeds(corpus_world, tmp_path):
    """--tiger.init_seed trains another model on the same splits; --recommend.ensemble averages the models'
    distributions over clusters (a mixture), and refuses a folder that holds no model."""

    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.cli import parse_config
    from playlist_gen.generation import load_generator

    steps = ["--tiger.max_steps=8", "--tiger.eval_steps=4", "--tiger.save_steps=4"]
    train_tiger.main(corpus_world + TINY + steps)
    cfg = config_for(corpus_world)
    other_out = tmp_path / "other_out"  # its own output_dir: the stage records its model there
    shutil.copytree(cfg.output_dir, other_out)
    other = [a for a in corpus_world if not a.startswith(("--output_dir", "--model_dir"))]
    train_tiger.main(other + [f"--output_dir={other_out}", f"--model_dir={cfg.model_dir}/s7"] + TINY + steps
                     + ["--tiger.init_seed=7"])
    clusters = load_catalogue(cfg).clusters
    titles = ["chill 1", "深夜emo 🌙", "focus"]
    one = load_generator(cfg, clusters).cluster_log_probs(titles)
    two = load_generator(parse_config(corpus_world + [f"--model_dir={cfg.model_dir}/s7"]),
                         clusters).cluster_log_probs(titles)
    ensemble = load_generator(parse_config(corpus_world + ["--recommend.ensemble=s7/tiger_final"]), clusters)
    both = ensemble.cluster_log_probs(titles)
    # the texts of small calls are remembered per model (a playlist's reasons score its title again): the same
    # numbers, a new text scored, the first model alone answered from its own rows
    np.testing.assert_array_equal(ensemble.cluster_log_probs(titles[::-1]), both[::-1])
    np.testing.assert_allclose(ensemble.cluster_log_probs(["rock", titles[0]], models=1),
                               load_generator(cfg, clusters).cluster_log_probs(["rock", titles[0]]), atol=1e-5)
    assert sorted(ensemble._memo)[:2] == [(0, "chill 1"), (0, "focus")] and len(ensemble._memo) <= 8
    assert not np.allclose(one, two, atol=1e-3)  # another init seed, another model
    assert np.allclose(np.exp(both), (np.exp(one) + np.exp(two)) / 2, atol=1e-9)
    with pytest.raises(PipelineError, match="ensemble: nowhere is not a folder"):
        load_generator(parse_config(corpus_world + ["--recommend.ensemble=nowhere"]), clusters)
    from playlist_gen.service import served_versions  # what /health and every feedback row record

    main = served_versions(cfg)["model"]
    served = served_versions(parse_config(corpus_world + ["--recommend.ensemble=s7/tiger_final"]))["model"]
    assert served.startswith(main + "+") and len(served) == len(main) + 17 and served != served_versions(
        parse_config(corpus_world + [f"--recommend.ensemble={cfg.model_dir}/tiger_final"]))["model"]


def test_tiger_ensemble_trains_every_model_in_one_run_and_generation_averages_them(corpus_world, tmp_path, caplog):
    """--tiger.ensemble=2: the second model is the one --tiger.init_seed=seed+1 trains alone (same weights), lives in
    tiger_members/1, is listed in tiger_meta.json and the model manifest, is kept by a re-run, and generation
    averages both; a listed member that is gone is named; fine-tuning the run's model fine-tunes each from its own."""

    from safetensors.torch import load_file

    from playlist_gen import manifest
    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.generation import load_generator
    from playlist_gen.io import read_json

    steps = TINY + ["--tiger.max_steps=8", "--tiger.eval_steps=4", "--tiger.save_steps=4"]
    train_tiger.main(corpus_world + steps + ["--tiger.ensemble=2"])
    cfg = config_for(corpus_world)
    member = cfg.member_model_dir(1) / "tiger_final"
    assert read_json(cfg.model_meta_path, "")["members"] == ["tiger_members/1/tiger_final"]
    assert len(read_json(cfg.train_summary_path, "")["members"]) == 1
    assert any("tiger_members/1/tiger_final" in key for key in read_json(cfg.manifest_path("model"), "")["files"])

    other_out = tmp_path / "other_out"  # the same member trained alone, in its own folders
    shutil.copytree(cfg.output_dir, other_out)
    other = [a for a in corpus_world if not a.startswith(("--output_dir", "--model_dir"))]
    train_tiger.main(other + [f"--output_dir={other_out}", f"--model_dir={tmp_path}/alone"] + steps
                     + [f"--tiger.init_seed={cfg.seed + 1}"])
    ours, alone = load_file(member / "model.safetensors"), load_file(tmp_path / "alone/tiger_final/model.safetensors")
    assert ours.keys() == alone.keys() and all(torch.equal(ours[k], alone[k]) for k in ours)

    clusters = load_catalogue(cfg).clusters
    titles = ["chill 1", "深夜emo 🌙"]
    both = load_generator(cfg, clusters)
    assert len(both.members) == 2
    main, second = (both._cluster_log_probs(*m, titles, 8) for m in both.members)
    assert np.allclose(np.exp(both.cluster_log_probs(titles)), (np.exp(main) + np.exp(second)) / 2, atol=1e-9)
    assert not np.allclose(main, second, atol=1e-3)
    assert np.array_equal(both.cluster_log_probs(titles, models=1), main)  # the reasons' occlusion: one model

    weights = (member / "model.safetensors", cfg.final_model_dir / "model.safetensors")
    stamps = {p: p.stat().st_mtime_ns for p in weights}
    with caplog.at_level("INFO"):
        train_tiger.main(corpus_world + steps + ["--tiger.ensemble=2"])  # a re-run keeps both trained models
    assert "already trained for this run, kept" in caplog.text
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    manifest.Reads(cfg).require("model", [cfg.final_model_dir, member])
    meta_text = cfg.model_meta_path.read_text()
    cfg.model_meta_path.write_text(meta_text.replace('"members": [', '"members": [7, '))
    with pytest.raises(PipelineError, match="tiger_meta.json is damaged .*re-run `python train_tiger.py`"):
        load_generator(cfg, clusters)
    cfg.model_meta_path.write_text(meta_text)
    member.rename(tmp_path / "away")
    with pytest.raises(PipelineError, match="was trained as an ensemble with .*missing"):
        load_generator(cfg, clusters)
    (tmp_path / "away").rename(member)
    train_tiger.main(corpus_world + steps)  # back to one model: the same weights, no members listed
    assert read_json(cfg.model_meta_path, "")["members"] == [] and len(load_generator(cfg, clusters).members) == 1
    assert "members" not in read_json(cfg.train_summary_path, "")
    assert cfg.final_model_dir.joinpath("model.safetensors").stat().st_mtime_ns == stamps[weights[1]]
    manifest.Reads(cfg).require("model", [cfg.final_model_dir])
    train_tiger.main(corpus_world + steps + ["--tiger.ensemble=2", f"--tiger.model_name={cfg.final_model_dir}",
                                             "--tiger.resume=false"])  # fine-tuning: each model from its own weights
    assert read_json(member / "tiger_meta.json", "")["model_name"] == str(member)
    assert read_json(cfg.model_meta_path, "")["model_name"] == str(cfg.final_model_dir)
