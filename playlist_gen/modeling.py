"""The T5 title -> semantic-ID model: its tokenizer, building it, saving it and loading it back.

`scratch`: a SentencePiece unigram tokenizer trained on the training titles (byte fallback, so any
Chinese character or emoji encodes without `<unk>`) plus every semantic-ID token as one whole token,
and a T5 sized by `TigerConfig`. A local path instead: that T5 and its tokenizer, with the semantic-ID
tokens added and the embeddings resized. Nothing is ever downloaded.

Stages 4/5 load the result with `load_tiger_runtime` (playlist_gen.t5_runtime, no transformers import); the tests
compare it with transformers' own loader and `generate` (tests/reference.py).
"""

import io
import logging
import re
from pathlib import Path

from config import COMMANDS, MODEL_META_FILE

from . import tokens
from .io import PipelineError, atomic_dir, read_json, write_json
from .text import CJK

log = logging.getLogger(__name__)

MADE_BY = f"run `{COMMANDS['model']}` first"
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2 in a scratch vocabulary, as in T5
_MIN_SP_VOCAB = 300  # 256 byte pieces + specials + a few characters; the data may allow fewer pieces


def semantic_tokens(meta: dict) -> list[str]:
    """Every semantic-ID token of a corpus/model, from its metadata (never from config defaults)."""
    return tokens.vocabulary(meta["codebook_sizes"], meta["token_scheme"])


def train_sentencepiece(texts, vocab_size: int, seed: int) -> list[tuple[str, float]]:
    """A unigram model of `texts` -> its (piece, score) list; ids 0/1/2 are <pad>, </s>, <unk>."""
    import sentencepiece as spm

    texts = [t for t in texts if t.strip()] or ["a"]
    proto = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=proto, model_type="unigram",
        vocab_size=max(vocab_size, _MIN_SP_VOCAB, len(set("".join(texts))) + 270),  # every character + 256 bytes
        hard_vocab_limit=False,  # cap: what the titles allow
        byte_fallback=True, character_coverage=0.9995, normalization_rule_name="identity",  # text is NFKC already
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece=PAD, eos_piece=EOS, unk_piece=UNK,
        split_digits=False, num_threads=1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


def scratch_tokenizer(texts, semantic: list[str], vocab_size: int, lowercase: bool, seed: int, cjk_chars: bool = True):
    """A fast tokenizer (saved as tokenizer.json, loads with AutoTokenizer) over the titles + semantic tokens.

    cjk_chars: every Chinese/Japanese/Korean character is its own word, as BERT's basic tokenizer does: a few
    hundred titles are far too few for SentencePiece to learn where Chinese words end, and pieces spanning
    several characters would not match the same word in a new title."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    texts = [tokens.TOKEN_RE.sub(" ", t.lower() if lowercase else t) for t in texts]  # seed songs' ID tokens:
    if cjk_chars:  # added whole below, never pieces of SentencePiece's vocabulary
        texts = [re.sub(f"({CJK})", r" \1 ", t) for t in texts]
    pieces = train_sentencepiece(texts, vocab_size, seed)
    backend = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
    split = [pre_tokenizers.Split(Regex(CJK), behavior="isolated")] if cjk_chars else []
    backend.pre_tokenizer = pre_tokenizers.Sequence([  # spaces between semantic tokens make no token
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")] + split)
    # CJK split last: one word-start mark per run of characters, not one per character (which doubled the length)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    backend.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}",
                                                           special_tokens=[(EOS, 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    tok.add_tokens([AddedToken(t, normalized=False) for t in semantic])
    log.info("tokenizer: %s title pieces + %s semantic-ID tokens", f"{len(pieces):,}", f"{len(semantic):,}")
    return tok


def pretrained_tokenizer(path: str, semantic: list[str]):
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    added = tok.add_tokens([AddedToken(t, normalized=False) for t in semantic])
    log.info("%s: added %s semantic-ID tokens to its tokenizer", path, f"{added:,}")
    return tok


def check_tokenizer(tok, semantic: list[str]) -> None:
    """Each semantic-ID token must be one known token, or targets would silently change."""
    ids = tok.convert_tokens_to_ids(semantic)
    bad = [t for t, i in zip(semantic, ids) if i is None or i == tok.unk_token_id]
    if bad or tok.pad_token_id is None or tok.eos_token_id is None:
        raise PipelineError(f"tokenizer lacks semantic-ID tokens {bad[:5]} or pad/eos tokens; "
                            "delete the checkpoint folder and train again")


def build_tokenizer(tc, train_texts, semantic: list[str], seed: int):
    if tc.model_name == "scratch":
        return scratch_tokenizer(train_texts, semantic, tc.sp_vocab_size, tc.lowercase, seed, tc.cjk_chars)
    if not Path(tc.model_name).is_dir():
        raise PipelineError(f"--tiger.model_name={tc.model_name!r}: use `scratch` or a local folder with a "
                            "pretrained T5 (no downloads)")
    return pretrained_tokenizer(tc.model_name, semantic)


def build_model(tc, tok):
    """A fresh T5 sized by config (scratch) or a local pretrained one, embeddings matching the tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    model_class = T5ForConditionalGeneration
    if tc.objective == "tuples" and tc.tuples_per_pass > 1:
        from .title_pass import TitlePassT5

        model_class = TitlePassT5  # T5 that encodes each title once for all its tuples
    extra = {}
    if tc.e5_prefix:
        from .e5_prefix import E5PrefixT5

        model_class, extra = E5PrefixT5, {"e5_prefix": tc.e5_prefix}  # saved in config.json for generation
    if tc.model_name == "scratch":
        config = T5Config(
            vocab_size=len(tok), d_model=tc.d_model, d_ff=tc.d_ff, d_kv=tc.d_kv, num_heads=tc.num_heads,
            num_layers=tc.num_layers, num_decoder_layers=tc.num_decoder_layers, dropout_rate=tc.dropout,
            feed_forward_proj=tc.feed_forward_proj, tie_word_embeddings=tc.tie_embeddings,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
            **extra,
        )
        model = model_class(config)
    else:
        model = model_class.from_pretrained(tc.model_name, local_files_only=True, **extra)
        model.resize_token_embeddings(len(tok))
    # a checkpoint stores a tied tensor once: declaring the other names as not saved lets the Trainer re-tie them
    # when it loads the best checkpoint, instead of warning that they are missing
    model._keys_to_ignore_on_save = sorted(tied_parameter_names(model))
    n = sum(p.numel() for p in model.parameters())
    log.info("T5: %s parameters, vocabulary %s", f"{n:,}", f"{len(tok):,}")
    return model


def tied_parameter_names(model) -> set[str]:
    """Names of parameters that are another parameter under a second name (T5's tied embeddings and output layer):
    a checkpoint stores each tensor once, so these are 'missing' from it by design."""
    first, tied = {}, set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(p), name) != name:
            tied.add(name)
    return tied


def save_final(model, tok, meta: dict, final_dir) -> Path:
    """Model, tokenizer and tiger_meta.json, swapped into place only when complete."""
    with atomic_dir(final_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(Path(tmp) / MODEL_META_FILE, meta)
    return Path(final_dir)


def load_tiger_runtime(model_dir, device="cpu"):
    """(t5_runtime.T5Runtime, t5_runtime.FastTokenizer, meta) for generation: the trained model
    without importing transformers (several seconds at the start of generate_playlist.py)."""
    from .t5_runtime import load_runtime

    model_dir = Path(model_dir)
    meta = read_json(model_dir / MODEL_META_FILE, f"{model_dir} has no trained model; {MADE_BY}")
    runtime, tok = load_runtime(model_dir, device)
    check_tokenizer(tok, semantic_tokens(meta))
    return runtime, tok, meta
