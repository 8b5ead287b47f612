"""The trained model loaded with transformers, the reference the tests compare the product's own loaders and
runtime (playlist_gen.t5_runtime, which never imports transformers) against."""

from pathlib import Path

from config import MODEL_META_FILE
from playlist_gen.io import read_json
from playlist_gen.modeling import check_tokenizer, semantic_tokens


def load_tiger(model_dir, device="cpu"):
    """(model in eval mode on `device`, tokenizer, meta) from a folder written by train_tiger.py."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model_dir = Path(model_dir)
    meta = read_json(model_dir / MODEL_META_FILE, "")
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, local_files_only=True).to(device).eval()
    check_tokenizer(tok, semantic_tokens(meta))
    return model, tok, meta
