"""Inference for a trained T5 with torch, safetensors and tokenizers only: no `transformers` import.

Importing `transformers`' T5 pulls in torch.distributed, torch._dynamo, scipy and more (6-7 s on the
2-core machine, more than twice `import torch`), which kept generate_playlist.py from printing its
first playlist within 3 s. This module reads the folder written by train_tiger.py (config.json,
model.safetensors, tokenizer.json) and repeats, op for op, what transformers 5.x computes for
T5ForConditionalGeneration.generate on it (sdpa attention, KV cache, vectorised beam search with
length_penalty 1 and early_stopping False, or multinomial sampling after temperature / top-p), so
the same seed gives the same tokens: tests/test_generation.py compares both on a trained model.
"""

import contextlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .io import PipelineError

ACTIVATIONS = ("relu", "gelu_new")  # T5Config.dense_act_fn values this module computes


def _gelu_new(x):  # transformers' NewGELUActivation, same op order
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _rms_norm(x, weight, eps: float):
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def _bucket(relative_position, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5's relative position -> bucket (transformers' `_relative_position_bucket`, same op order)."""
    buckets = 0
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, relative_position, large)


class T5Runtime:
    """The weights of a T5ForConditionalGeneration and its forward passes for generation (eval mode)."""

    def __init__(self, config: dict, weights: dict, device="cpu"):
        ff = config.get("feed_forward_proj", "relu")  # transformers 5 derives the activation from it alone
        act = "gelu_new" if ff == "gated-gelu" else ff.split("-")[-1]
        if act not in ACTIVATIONS or config.get("model_type", "t5") != "t5":
            raise PipelineError(f"the trained model is a {config.get('model_type')} with feed_forward_proj={ff!r}; "
                                f"generation supports T5 with {ACTIVATIONS} activations")
        self.w = {k: v.to(device) for k, v in weights.items()}
        self.w["lm_head.weight"] = self.w["shared.weight"]  # transformers 5 always ties the output embedding
        self.heads, self.d_kv, self.eps = config["num_heads"], config["d_kv"], config["layer_norm_epsilon"]
        self.buckets, self.max_distance = config["relative_attention_num_buckets"], \
            config["relative_attention_max_distance"]
        self.gated = ff.startswith("gated-")
        self.act = _gelu_new if act == "gelu_new" else torch.relu
        self.n_enc, self.n_dec = config["num_layers"], config.get("num_decoder_layers") or config["num_layers"]
        scale = config.get("tie_word_embeddings") is not False  # T5Config's rule (v1.1 configs say False)
        self.scale_out = config["d_model"] ** -0.5 if scale else None
        self.pad_id, self.eos_id = config["pad_token_id"], config["eos_token_id"]
        self.start_id = config.get("decoder_start_token_id", self.pad_id)
        self.e5_prefix, self.d_model = int(config.get("e5_prefix") or 0), config["d_model"]  # playlist_gen.e5_prefix
        if self.e5_prefix and not {"e5_proj.weight", "e5_mean", "e5_scale"} <= self.w.keys():
            raise PipelineError("the trained model's config.json says e5_prefix but its weights lack e5_proj, "
                                "e5_mean or e5_scale; re-run `python train_tiger.py`")
        self.device = device

    def _ff(self, p: str, x):
        h = _rms_norm(x, self.w[p + "layer_norm.weight"], self.eps)
        if self.gated:
            h = self.act(F.linear(h, self.w[p + "DenseReluDense.wi_0.weight"])) * \
                F.linear(h, self.w[p + "DenseReluDense.wi_1.weight"])
        else:
            h = self.act(F.linear(h, self.w[p + "DenseReluDense.wi.weight"]))
        return x + F.linear(h, self.w[p + "DenseReluDense.wo.weight"])

    def _split(self, x):  # (N, T, H*d) -> (N, H, T, d)
        return x.view(*x.shape[:-1], -1, self.d_kv).transpose(1, 2)

    def _attend(self, p: str, q, k, v, bias, mask):
        """sdpa with the position bias as additive mask, as transformers' sdpa_attention_forward does."""
        if mask is not None:
            bias = torch.where(mask, bias, torch.finfo(k.dtype).min)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.contiguous(), dropout_p=0.0, scale=1.0)
        out = out.reshape(out.shape[0], -1, q.shape[2], v.shape[-1]).transpose(1, 2).contiguous()
        return F.linear(out.reshape(*out.shape[:2], -1).contiguous(), self.w[p + "o.weight"])

    def _bias(self, stack: str, q_len: int, k_len: int, past: int = 0):
        ctx = torch.arange(q_len, dtype=torch.long, device=self.device)[:, None] + past
        mem = torch.arange(k_len, dtype=torch.long, device=self.device)[None, :]
        b = _bucket(mem - ctx, stack == "encoder", self.buckets, self.max_distance)
        table = self.w[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        return F.embedding(b, table).permute([2, 0, 1]).unsqueeze(0)

    def embed(self, input_ids, attention_mask, e5=None):
        """(N, S) token ids and 0/1 mask -> the encoder's (N, P + S, d_model) input vectors and their mask: P = the
        e5 prefix's vectors (e5: (N, 384) embeddings of the texts, for a model trained with one), then the tokens."""
        x = F.embedding(input_ids, self.w["shared.weight"])
        if not self.e5_prefix:
            return x, attention_mask
        if e5 is None:
            raise PipelineError("this model reads each text's e5 embedding (it was trained with --tiger.e5_prefix)")
        e5 = (e5.to(self.device, torch.float32) - self.w["e5_mean"]) * self.w["e5_scale"]  # E5PrefixT5.fit_e5
        prefix = F.linear(e5, self.w["e5_proj.weight"], self.w["e5_proj.bias"]).view(
            len(e5), self.e5_prefix, self.d_model).to(x.dtype)
        ones = attention_mask.new_ones(len(e5), self.e5_prefix)
        return torch.cat([prefix, x], dim=1), torch.cat([ones, attention_mask], dim=1)

    def encode(self, input_ids, attention_mask, e5=None):
        """(N, S) token ids and 0/1 mask (and the texts' e5 embeddings, see `embed`) -> (N, P + S, d_model) encoder
        states and their (N, P + S) mask."""
        x, attention_mask = self.embed(input_ids, attention_mask, e5)
        length = x.shape[1]
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :].expand(
            -1, 1, length, -1)
        bias = self._bias("encoder", length, length)
        for i in range(self.n_enc):
            p = f"encoder.block.{i}.layer."
            h = _rms_norm(x, self.w[p + "0.layer_norm.weight"], self.eps)
            q, k, v = (self._split(F.linear(h, self.w[f"{p}0.SelfAttention.{n}.weight"])) for n in "qkv")
            x = x + self._attend(p + "0.SelfAttention.", q, k, v, bias, mask)
            x = self._ff(p + "1.", x)
        return _rms_norm(x, self.w["encoder.final_layer_norm.weight"], self.eps), attention_mask

    def start(self, enc_states, enc_mask) -> dict:
        """The decoding state for (N, S, d) encoder states: cross-attention keys/values, empty self cache."""
        names = [[f"decoder.block.{i}.layer.1.EncDecAttention.{n}.weight" for n in "kv"] for i in range(self.n_dec)]
        cross = [tuple(self._split(F.linear(enc_states, self.w[n])) for n in kv) for kv in names]
        mask = None if bool(enc_mask.all()) else enc_mask.bool()[:, None, None, :]
        zeros = torch.zeros((1, self.heads, 1, enc_states.shape[1]), device=self.device, dtype=enc_states.dtype)
        return {"cross": cross, "self": [None] * self.n_dec, "cross_bias": zeros, "cross_mask": mask, "len": 0}

    def step(self, tokens, state: dict):
        """(N,) last tokens -> (N, vocab) float32 logits; appends to the self-attention cache."""
        x = F.embedding(tokens[:, None], self.w["shared.weight"])
        past = state["len"]
        bias = self._bias("decoder", 1, past + 1, past)
        for i in range(self.n_dec):
            p = f"decoder.block.{i}.layer."
            h = _rms_norm(x, self.w[p + "0.layer_norm.weight"], self.eps)
            q, k, v = (self._split(F.linear(h, self.w[f"{p}0.SelfAttention.{n}.weight"])) for n in "qkv")
            if state["self"][i] is not None:
                k, v = (torch.cat([old, new], dim=-2) for old, new in zip(state["self"][i], (k, v)))
            state["self"][i] = (k, v)
            x = x + self._attend(p + "0.SelfAttention.", q, k, v, bias, None)
            h = _rms_norm(x, self.w[p + "1.layer_norm.weight"], self.eps)
            q = self._split(F.linear(h, self.w[p + "1.EncDecAttention.q.weight"]))
            x = x + self._attend(p + "1.EncDecAttention.", q, *state["cross"][i], state["cross_bias"],
                                 state["cross_mask"])
            x = self._ff(p + "2.", x)
        state["len"] = past + 1
        x = _rms_norm(x, self.w["decoder.final_layer_norm.weight"], self.eps)
        if self.scale_out is not None:
            x = x * self.scale_out
        return F.linear(x, self.w["lm_head.weight"])[:, -1, :].to(copy=True, dtype=torch.float32)

    @staticmethod
    def reorder(state: dict, index) -> None:
        """Beam search moved rows: the self-attention cache follows (cross keys are equal within a title)."""
        state["self"] = [(k.index_select(0, index), v.index_select(0, index)) for k, v in state["self"]]

    @staticmethod
    def select(state: dict, index) -> None:
        """Rows `index` of every title's state (rows may repeat: one title's prefix continued several ways)."""
        state["self"] = [(k.index_select(0, index), v.index_select(0, index)) for k, v in state["self"]]
        state["cross"] = [(k.index_select(0, index), v.index_select(0, index)) for k, v in state["cross"]]
        if state["cross_mask"] is not None:
            state["cross_mask"] = state["cross_mask"].index_select(0, index)


class FastTokenizer:
    """The saved tokenizer.json through `tokenizers`, with the calls generation needs."""

    def __init__(self, path, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(path))
        self.pad_token_id = self.backend.token_to_id(pad_token)
        self.eos_token_id = self.backend.token_to_id(eos_token)
        self.unk_token_id = self.backend.token_to_id(unk_token)

    def convert_tokens_to_ids(self, toks: list[str]) -> list:
        return [self.backend.token_to_id(t) for t in toks]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.backend.id_to_token(i) for i in ids]

    def batch(self, texts: list[str], max_length: int, device="cpu"):
        """(input_ids, attention_mask) long tensors: truncated to max_length, right-padded to the longest."""
        self.backend.enable_truncation(max_length)
        self.backend.enable_padding(pad_id=self.pad_token_id, pad_token=self.backend.id_to_token(self.pad_token_id))
        enc = self.backend.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long, device=device)
        return ids, torch.tensor([e.attention_mask for e in enc], dtype=torch.long, device=device)


def load_runtime(model_dir, device="cpu") -> tuple[T5Runtime, FastTokenizer]:
    from safetensors.torch import load_file

    from .io import require_file

    model_dir = Path(model_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        require_file(model_dir / name, "the model folder is incomplete; run `python train_tiger.py` again")
    with damaged_file_error(model_dir / "config.json"):
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        runtime_config_keys(config)
    with damaged_file_error(model_dir / "tokenizer_config.json"):
        tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        specials = {k: tok_cfg[k] if isinstance(tok_cfg.get(k), str) else d for k, d in
                    (("pad_token", "<pad>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
    with damaged_file_error(model_dir / "model.safetensors"):
        weights = load_file(model_dir / "model.safetensors")
        if "shared.weight" not in weights:
            raise KeyError("no shared.weight")
    with damaged_file_error(model_dir / "tokenizer.json"):
        tokenizer = FastTokenizer(model_dir / "tokenizer.json", **specials)
    return T5Runtime(config, weights, device), tokenizer


CONFIG_KEYS = ("num_heads", "d_kv", "layer_norm_epsilon", "relative_attention_num_buckets",
               "relative_attention_max_distance", "num_layers", "d_model", "pad_token_id", "eos_token_id")


def runtime_config_keys(config) -> None:
    missing = [k for k in CONFIG_KEYS if k not in config] if isinstance(config, dict) else ["a JSON object"]
    if missing:
        raise KeyError(f"missing {', '.join(missing)}")


@contextlib.contextmanager
def damaged_file_error(path):
    """A file of the trained model that cannot be read, for any reader's reason, is one line naming it."""
    try:
        yield
    except PipelineError:
        raise
    except Exception as e:  # json, safetensors and tokenizers each raise their own kinds
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise PipelineError(f"{path} is damaged ({detail}); re-run `python train_tiger.py`") from None


# ---------------------------------------------------------------- decoding loops (transformers' semantics)
def min_new_tokens(n: int, eos_id: int):
    """transformers' MinNewTokensLengthLogitsProcessor for a decoder prompt of one token."""
    def process(input_ids, scores):
        if input_ids.shape[-1] - 1 < n:
            return torch.where(torch.arange(scores.shape[-1], device=scores.device) == eos_id, -math.inf, scores)
        return scores.clone()
    return process


def top_p_warper(top_p: float):
    """transformers' TopPLogitsWarper with min_tokens_to_keep=1."""
    def process(_input_ids, scores):
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        remove[..., -1:] = 0
        return scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
    return process


def _apply(processors, input_ids, scores):
    for p in processors:
        scores = p(input_ids, scores)
    return scores


def sample(rt: T5Runtime, ids, mask, processors, max_new_tokens: int, e5=None):
    """Multinomial sampling; rows that ended continue with pad. -> (N, 1 + generated) token ids."""
    state = rt.start(*rt.encode(ids, mask, e5))
    seqs = torch.full((ids.shape[0], 1), rt.start_id, dtype=torch.long, device=ids.device)
    unfinished = torch.ones(ids.shape[0], dtype=torch.long, device=ids.device)
    for _ in range(max_new_tokens):
        scores = _apply(processors, seqs, rt.step(seqs[:, -1], state))
        nxt = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        nxt = nxt * unfinished + rt.pad_id * (1 - unfinished)
        seqs = torch.cat([seqs, nxt[:, None]], dim=-1)
        unfinished = unfinished & ~(nxt == rt.eos_id)
        if unfinished.max() == 0:
            break
    return seqs


class _Beams:
    """transformers' vectorised beam search state (length_penalty 1.0, early_stopping False, one EOS token)."""

    def __init__(self, batch: int, beams: int, max_length: int, start_id: int, fill: int, device):
        self.batch, self.beams, self.keep = batch, beams, 2 * beams
        self.running = torch.full((batch, beams, max_length), fill, dtype=torch.int64, device=device)
        self.running[:, :, :1] = start_id
        self.done = self.running.clone()
        self.running_scores = torch.zeros((batch, beams), dtype=torch.float, device=device)
        self.running_scores[:, 1:] = -1e9
        self.done_scores = torch.full((batch, beams), -1e9, dtype=torch.float, device=device)
        self.finished = torch.zeros((batch, beams), dtype=torch.bool, device=device)
        self.improvable = torch.ones((batch, 1), dtype=torch.bool, device=device)
        self.top_mask = torch.arange(self.keep, device=device) < beams  # the first num_beams of the top 2*num_beams
        self.offset = torch.arange(batch, device=device).view(-1, 1) * beams
        self.max_length = max_length

    def advance(self, log_probs, cur_len: int, eos_id: int):
        """One step from (batch*beams, vocab) processed log-probs -> (batch*beams,) rows to keep; None: done."""
        b, k = self.batch, self.beams
        acc = (log_probs.reshape(b, k, -1) + self.running_scores[:, :, None]).reshape(b, -1)
        top_lp, top_idx = torch.topk(acc, k=self.keep)
        src = top_idx // log_probs.shape[-1]
        top_seqs = torch.take_along_dim(self.running, src[..., None], dim=1)
        top_seqs[:, :, cur_len] = top_idx % log_probs.shape[-1]
        hits = (top_seqs[:, :, cur_len] == eos_id) | (cur_len + 1 >= self.max_length)
        running_lp = top_lp + hits.to(torch.float32) * -1.0e9
        nxt = torch.topk(running_lp, k=k)[1]
        self.running = torch.take_along_dim(top_seqs, nxt[..., None], dim=1)
        self.running_scores = torch.take_along_dim(running_lp, nxt, dim=1)
        self._finish(top_seqs, top_lp, hits, cur_len)
        worst = torch.where(self.finished, torch.min(self.done_scores, dim=1, keepdim=True)[0], -1.0e9)
        self.improvable = self.improvable & torch.any(self.running_scores[:, :1] / (cur_len + 1 - 1) ** 1.0 > worst,
                                                      dim=-1, keepdim=True)
        if not (bool(torch.any(self.improvable)) and not bool(torch.all(hits))):
            return None
        return (torch.take_along_dim(src, nxt, dim=1) + self.offset).reshape(-1)

    def _finish(self, top_seqs, top_lp, hits, cur_len: int):
        just_done = hits & self.top_mask[None, :]
        scores = top_lp / ((cur_len + 1 - 1) ** 1.0)
        scores += (~self.improvable).to(torch.float32) * -1.0e9
        scores += (~just_done) * -1.0e9
        merged = torch.topk(torch.cat((self.done_scores, scores), dim=1), k=self.beams)[1]
        self.done = torch.take_along_dim(torch.cat((self.done, top_seqs), dim=1), merged[..., None], dim=1)
        self.done_scores = torch.take_along_dim(torch.cat((self.done_scores, scores), dim=1), merged, dim=1)
        self.finished = torch.take_along_dim(torch.cat((self.finished, just_done), dim=1), merged, dim=1)


def tuple_log_probs(rt: T5Runtime, ids, mask, child, level_tokens: list, e5=None):
    """log P(tuple | text) of every tuple of a prefix trie, exactly: depth by depth, each text's decoder runs once
    per trie node (its KV cache shared by the node's children), and each level's distribution is renormalised over
    the codes that exist below the node (the constrained decoder's distribution).

    child: (internal nodes, width) long tensor, node x code -> child node or -1, nodes numbered depth by depth
    (ClusterTrie.child); level_tokens: per level the token ids of codes 0..K-1. -> (rows, leaf nodes, log-probs):
    row r of the result belongs to text `rows[r]`."""
    n = ids.shape[0]
    state = rt.start(*rt.encode(ids, mask, e5))
    text = torch.arange(n, device=ids.device)
    node = torch.zeros(n, dtype=torch.long, device=ids.device)
    logp = torch.zeros(n, device=ids.device)
    last = torch.full((n,), rt.start_id, dtype=torch.long, device=ids.device)
    parent = None  # per row, the row of the previous depth it continues
    for toks in level_tokens:
        if parent is not None:
            rt.select(state, parent)
        scores = rt.step(last, state)[:, toks]
        kids = child[node, :len(toks)]
        scores = F.log_softmax(scores.masked_fill(kids < 0, -math.inf), dim=-1) + logp[:, None]
        parent, code = torch.nonzero(kids >= 0, as_tuple=True)
        node, logp, text, last = kids[parent, code], scores[parent, code], text[parent], toks[code]
    return text, node, logp


def beam_search(rt: T5Runtime, ids, mask, processors, num_beams: int, max_new_tokens: int, e5=None):
    """Beam search with the KV cache -> (N, 1 + longest) best sequences, pad after EOS."""
    enc, mask = rt.encode(ids, mask, e5)
    state = rt.start(enc.repeat_interleave(num_beams, dim=0), mask.repeat_interleave(num_beams, dim=0))
    beams = _Beams(ids.shape[0], num_beams, 1 + max_new_tokens, rt.start_id, rt.pad_id or rt.eos_id, ids.device)
    cur_len = 1
    while True:
        flat = beams.running[:, :, :cur_len].reshape(-1, cur_len)
        log_probs = _apply(processors, flat, F.log_softmax(rt.step(flat[:, -1], state), dim=-1))
        rows = beams.advance(log_probs, cur_len, rt.eos_id)
        cur_len += 1
        if rows is None:
            break
        rt.reorder(state, rows)
    return beams.done[:, 0, :cur_len]  # positions after cur_len were never written
