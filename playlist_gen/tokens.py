"""The semantic-ID token scheme: tuples of codes <-> token strings.

`level` (default): each level has its own tokens, `<a_12><b_7>`, so the model can tell a
level-1 code from a level-2 code. `shared`: the original pipeline's `<id_12><id_7>`, kept
for comparison. A target sequence is the tokens of its tuples joined by single spaces.
"""

import re
import string

import numpy as np

from config import TOKEN_SCHEMES as SCHEMES

_LEVEL_NAMES = string.ascii_lowercase
TOKEN_RE = re.compile(r"<([a-z]+)_(\d+)>")


def token(level: int, code: int, scheme: str = "level") -> str:
    if scheme == "shared":
        return f"<id_{code}>"
    return f"<{_LEVEL_NAMES[level]}_{code}>"


def vocabulary(codebook_sizes, scheme: str = "level") -> list[str]:
    """Every semantic-ID token, in a fixed order (level by level, code by code)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown token scheme {scheme!r}; use one of {SCHEMES}")
    if scheme == "shared":
        return [token(0, c, scheme) for c in range(max(codebook_sizes))]
    return [token(lvl, c, scheme) for lvl, k in enumerate(codebook_sizes) for c in range(k)]


def tuple_tokens(codes, scheme: str = "level") -> list[str]:
    return [token(lvl, c, scheme) for lvl, c in enumerate(codes)]


def encode(tuples, scheme: str = "level") -> str:
    """A sequence of tuples -> `<a_1> <b_2> <a_3> <b_4>`."""
    return " ".join(t for codes in tuples for t in tuple_tokens(codes, scheme))


def with_seeds(text: str, seed_tuples, scheme: str = "level") -> str:
    """A model input for continuing a playlist: the input text, then the seed songs' semantic-ID tokens."""
    from .text import EXTRA_SEPARATOR

    return f"{text}{EXTRA_SEPARATOR}{encode(seed_tuples, scheme)}" if len(seed_tuples) else text


def tuple_strings(codes: np.ndarray, scheme: str = "level") -> np.ndarray:
    """Rows of codes (n tuples x levels) -> each tuple's tokens as one string, `<a_12> <b_7>` (object array).
    Each distinct (level, code) token is formatted once: a million tuples take about a second."""
    codes = np.asarray(codes, dtype=np.int64)
    codes = codes[:, None] if codes.ndim == 1 else codes
    out = np.full(len(codes), "", dtype=object)
    for level in range(codes.shape[1]):
        values, where = np.unique(codes[:, level], return_inverse=True)
        names = np.array([token(level, int(c), scheme) for c in values], dtype=object)
        out = out + (" " if level else "") + names[where]
    return out


def parse_token(tok: str) -> tuple[int | None, int] | None:
    """`<b_7>` -> (1, 7); `<id_7>` -> (None, 7); anything else -> None."""
    m = TOKEN_RE.fullmatch(tok.strip())
    if not m:
        return None
    name, code = m.group(1), int(m.group(2))
    if name == "id":
        return None, code
    if len(name) != 1:
        return None
    return _LEVEL_NAMES.index(name), code


def decode(text_or_tokens, levels: int, scheme: str = "level") -> list[tuple[int, ...]]:
    """Tokens (a string or a list) -> complete tuples. With the level scheme a token at the wrong
    level restarts the tuple; an incomplete tuple at the end and non-ID tokens are dropped."""
    toks = TOKEN_RE.findall(text_or_tokens) if isinstance(text_or_tokens, str) else None
    if toks is not None:
        parsed = [(None if n == "id" else (_LEVEL_NAMES.index(n) if len(n) == 1 else -1), int(c)) for n, c in toks]
    else:
        parsed = [p for p in (parse_token(t) for t in text_or_tokens) if p is not None]
    out, cur = [], []
    for lvl, code in parsed:
        if scheme == "level":
            if lvl is None or lvl < 0:
                continue
            if lvl != len(cur):
                cur = [code] if lvl == 0 else []
                continue
        cur.append(code)
        if len(cur) == levels:
            out.append(tuple(cur))
            cur = []
    return out
