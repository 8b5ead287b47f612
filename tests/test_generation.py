import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from playlist_gen.generation import ClusterTrie, TrieLogitsProcessor

K, EOS = 8, 1
LEVEL_TOKENS = [list(range(3, 3 + K)), list(range(3 + K, 3 + 2 * K))]  # <a_c>, <b_c> token ids
VOCAB = 3 + 2 * K


def tiny_t5(seed=0, **kw):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=VOCAB, d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
                   d_kv=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=EOS, **kw)
    return T5ForConditionalGeneration(cfg).eval()


def to_tuples(row):
    """Generated ids after the decoder start -> tuples; asserts EOS sits at a tuple boundary."""
    gen = row[1:]
    if EOS in gen:
        end = gen.index(EOS)
        assert end % 2 == 0, f"EOS inside a tuple: {row}"
        assert all(t == 0 for t in gen[end + 1:]), f"tokens after EOS: {row}"
        gen = gen[:end]
    assert len(gen) % 2 == 0
    tuples = []
    for a, b in zip(gen[::2], gen[1::2]):
        assert a in LEVEL_TOKENS[0] and b in LEVEL_TOKENS[1], row
        tuples.append((a - 3, b - 3 - K))
    return tuples


CLUSTERS = sorted({(a, b) for a in range(K) for b in range(K) if (a * 3 + b * 5) % 7 < 2})


@pytest.mark.parametrize("mode", [dict(num_beams=3), dict(do_sample=True, top_p=0.9, temperature=2.0, top_k=0),
                                  dict(num_beams=1, do_sample=False)])
def test_constrained_generation_yields_real_distinct_clusters(mode):
    model, trie = tiny_t5(), ClusterTrie(CLUSTERS, [K, K])
    n = 6
    proc = TrieLogitsProcessor(trie, LEVEL_TOKENS, VOCAB, EOS, min_tuples=n, max_tuples=n)
    torch.manual_seed(1)
    x = torch.randint(3, VOCAB, (5, 7))
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=2 * n + 1,
                         logits_processor=[proc], **mode)
    for row in out.tolist():
        tuples = to_tuples(row)
        assert len(tuples) == n
        assert set(tuples) <= set(CLUSTERS)
        assert len(set(tuples)) == n


def test_unconstrained_random_model_makes_invalid_tuples():
    """The control for the test above: without the trie a random model leaves the cluster set."""
    model = tiny_t5()
    torch.manual_seed(1)
    x = torch.randint(3, VOCAB, (5, 7))
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=13, min_new_tokens=12)
    pairs = [tuple(row[i:i + 2]) for row in out.tolist() for i in range(1, 13, 2)]
    valid = {(3 + a, 3 + K + b) for a, b in CLUSTERS}
    assert sum(p not in valid for p in pairs) > len(pairs) // 2


def runtime_of(model):
    from playlist_gen.t5_runtime import T5Runtime

    config = model.config.to_dict()  # as save_pretrained writes it: the original tie_word_embeddings
    config["tie_word_embeddings"] = model.config.scale_decoder_outputs
    return T5Runtime(config, dict(model.state_dict()))


def same_tokens(ours, theirs, pad=0):
    """transformers crops its output to the longest kept row; ours may run longer, with pad only."""
    width = theirs.shape[1]
    return ours[:, :width].tolist() == theirs.tolist() and bool((ours[:, width:] == pad).all())


@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("mode", ["beam", "sample"])
@pytest.mark.parametrize("t5", [{}, {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}])
def test_runtime_decodes_the_same_tokens_as_transformers(mode, constrained, t5):
    """t5_runtime (no transformers import) repeats transformers' generate op for op: same seed, same tokens,
    also with padded titles in the batch, for T5 and T5 v1.1 (gated GELU, unscaled outputs)."""
    from playlist_gen import t5_runtime as rt

    model, n = tiny_t5(**t5), 6
    torch.manual_seed(1)
    x = torch.randint(3, VOCAB, (5, 7))
    mask = torch.ones_like(x)
    mask[1, 4:], mask[3, 2:], x[1, 4:], x[3, 2:] = 0, 0, 0, 0  # two shorter titles
    proc = TrieLogitsProcessor(ClusterTrie(CLUSTERS, [K, K]), LEVEL_TOKENS, VOCAB, EOS, min_tuples=n, max_tuples=n)
    hf_kw = {"logits_processor": [proc]} if constrained else {"min_new_tokens": 2 * n}
    ours = [proc] if constrained else [rt.min_new_tokens(2 * n, EOS)]
    if mode == "beam":
        hf_kw.update(num_beams=3, do_sample=False)
    else:
        hf_kw.update(num_beams=1, do_sample=True, temperature=2.0, top_p=0.9, top_k=0)
        ours += [lambda _ids, scores: scores / 2.0, rt.top_p_warper(0.9)]
    torch.manual_seed(5)
    theirs = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=2 * n + 1, **hf_kw)
    torch.manual_seed(5)
    with torch.inference_mode():
        if mode == "beam":
            out = rt.beam_search(runtime_of(model), x, mask, ours, 3, 2 * n + 1)
        else:
            out = rt.sample(runtime_of(model), x, mask, ours, 2 * n + 1)
    assert same_tokens(out, theirs), (out.tolist(), theirs.tolist())


def test_runtime_refuses_other_feed_forward():
    from playlist_gen.io import PipelineError

    cfg = tiny_t5().config.to_dict()
    with pytest.raises(PipelineError, match="feed_forward_proj"):
        from playlist_gen.t5_runtime import T5Runtime

        T5Runtime({**cfg, "feed_forward_proj": "gated-silu"}, dict(tiny_t5().state_dict()))


def test_runtime_reads_the_e5_prefix_as_the_trained_model_does(tmp_path):
    """A model trained with --tiger.e5_prefix, saved and read back by t5_runtime: its logits at every decoder position
    equal the training model's (a padded text in the batch); the e5 vectors change them, and none given is an
    error."""
    import json

    from safetensors.torch import load_file
    from transformers import T5Config

    from playlist_gen.e5_prefix import E5_DIM, E5PrefixT5
    from playlist_gen.io import PipelineError
    from playlist_gen.t5_runtime import T5Runtime

    torch.manual_seed(0)
    model = E5PrefixT5(T5Config(vocab_size=VOCAB, d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1,
                                num_heads=2, d_kv=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=EOS,
                                e5_prefix=3)).eval()
    model.fit_e5(torch.randn(50, E5_DIM).numpy() * 0.1 + 0.3)  # standardisation saved with the weights
    model.save_pretrained(tmp_path)
    rt = T5Runtime(json.loads((tmp_path / "config.json").read_text()), load_file(tmp_path / "model.safetensors"))
    x = torch.randint(3, VOCAB, (4, 6))
    mask = torch.ones_like(x)
    mask[1, 3:], x[1, 3:] = 0, 0
    e5 = torch.nn.functional.normalize(torch.randn(4, E5_DIM), dim=-1)
    dec = torch.cat([torch.zeros(4, 1, dtype=torch.long), torch.randint(3, VOCAB, (4, 4))], dim=1)
    with torch.inference_mode():
        theirs = model(input_ids=x, attention_mask=mask, e5=e5, decoder_input_ids=dec).logits
        state = rt.start(*rt.encode(x, mask, e5))
        ours = torch.stack([rt.step(dec[:, t], state) for t in range(dec.shape[1])], dim=1)
        other = rt.step(dec[:, 0], rt.start(*rt.encode(x, mask, e5.roll(1, 0))))
    assert torch.allclose(ours, theirs.float(), atol=1e-5)
    assert not torch.allclose(other, ours[:, 0], atol=1e-3)
    with pytest.raises(PipelineError, match="e5"):
        rt.encode(x, mask)


def _mask(proc, prefix):
    ids = torch.tensor([[0] + prefix])
    return proc(ids, torch.zeros(1, VOCAB))[0] > float("-inf")


def test_processor_masks_by_hand():
    trie = ClusterTrie([(0, 0), (0, 1), (1, 0)], [K, K])
    a, b = LEVEL_TOKENS
    proc = TrieLogitsProcessor(trie, LEVEL_TOKENS, VOCAB, EOS, min_tuples=1, max_tuples=5)
    assert _mask(proc, []).nonzero().flatten().tolist() == [a[0], a[1]]  # no EOS before the first tuple
    assert _mask(proc, [a[0]]).nonzero().flatten().tolist() == [b[0], b[1]]
    # (1, 0) used: level-0 code 1 leads only to used clusters, EOS now allowed at the boundary
    assert _mask(proc, [a[1], b[0]]).nonzero().flatten().tolist() == [EOS, a[0]]
    assert _mask(proc, [a[1], b[0], a[0]]).nonzero().flatten().tolist() == [b[0], b[1]]
    assert _mask(proc, [a[1], b[0], a[0], b[1]]).nonzero().flatten().tolist() == [EOS, a[0]]
    assert _mask(proc, [a[1], b[0], a[0], b[1], a[0]]).nonzero().flatten().tolist() == [b[0]]
    # every cluster used: only EOS, even below min_tuples
    strict = TrieLogitsProcessor(trie, LEVEL_TOKENS, VOCAB, EOS, min_tuples=9, max_tuples=9)
    assert _mask(strict, [a[1], b[0], a[0], b[1], a[0], b[0]]).nonzero().flatten().tolist() == [EOS]
    # without no-repeat a used cluster stays allowed; a finished row only continues with EOS
    free = TrieLogitsProcessor(trie, LEVEL_TOKENS, VOCAB, EOS, min_tuples=1, no_repeat=False)
    assert _mask(free, [a[1], b[0]]).nonzero().flatten().tolist() == [EOS, a[0], a[1]]
    assert _mask(free, [a[1], b[0], EOS, 0]).nonzero().flatten().tolist() == [EOS]
    assert _mask(proc, [a[0], b[0], a[1], b[0], a[0], b[1], a[0]]).nonzero().flatten().tolist() == [EOS]


def test_trie_counts_three_levels():
    trie = ClusterTrie([(0, 1, 2), (0, 1, 3), (0, 2, 0), (4, 0, 0)], [5, 5, 5])
    assert trie.leaf_count[0] == 4
    root_children = trie.child[0]
    assert (root_children >= 0).nonzero().flatten().tolist() == [0, 4]
    assert trie.leaf_count[root_children[0]] == 3


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3).flatmap(lambda n: st.lists(st.tuples(*[st.integers(0, 3)] * n), min_size=1, max_size=30)))
def test_trie_paths_and_counts_follow_the_clusters(clusters):
    trie = ClusterTrie(clusters, [4] * len(clusters[0]))
    distinct = sorted(set(clusters))
    assert trie.clusters == distinct
    paths = []
    for i, cluster in enumerate(distinct):  # walking the child table from the root reaches the cluster's leaf
        path = [0]
        for code in cluster:
            path.append(int(trie.child[path[-1], code]))
        assert path[-1] == trie.first_leaf + i and trie.anc[path[-1]].tolist() == path
        paths.append(path)
    for node in range(len(trie.leaf_count)):  # every node has clusters below it, counted
        assert int(trie.leaf_count[node]) == sum(node in p for p in paths) > 0
    assert trie.widest == max(len({c[:d] for c in distinct}) for d in range(len(distinct[0])))
