"""Title text normalisation shared by the corpus (training), the baselines and the CLI (generation).

Kept free of pandas so generate_playlist.py can clean a title without importing it (~0.4 s of CPU).
"""

import re
import unicodedata

_SPACE_RE = re.compile(r"\s+")
_SPACED_OUT = re.compile(r"(?<!\S)(?:\w ){2,}\w(?!\S)")  # "c h i l l", "9 0 s": single characters, single spaces
_SYMBOLS = re.compile(r"[^\w\s&'+#]")  # punctuation, emoji, symbols; & ' + # stay (r&b, rock'n'roll, c#)
# scripts written without spaces between words: one character is one unit for the tokenizer and the baselines
CJK = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]"


def clean_text(text: str) -> str:
    """NFKC, then every run of whitespace (tabs, newlines, ideographic spaces) -> one space, stripped."""
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", str(text))).strip()


def normalize_title(text: str) -> str:
    """The title as the model and the baselines read it, as the RecSys Challenge 2018 teams normalised titles:
    NFKC, case folded, spaced-out letters joined ("c h i l l" -> "chill"), punctuation and emoji dropped.
    A title made only of symbols (an emoji playlist) keeps them: they are all it says."""
    folded = clean_text(text).casefold()
    words = _SPACE_RE.sub(" ", _SYMBOLS.sub(" ", folded)).strip()
    return _SPACED_OUT.sub(lambda m: m.group(0).replace(" ", ""), words) or folded


def title_key(text: str) -> str:
    """The key grouped splits use: titles that normalise alike (`Chill 🌴`, `chill`, `C H I L L`) are one title."""
    return normalize_title(text)


EXTRA_SEPARATOR = " | "  # between the title and each extra column (tags) in the model's input text


def input_text(title: str, extras=(), normalize: bool = True) -> str:
    """The model's input: the normalised (else only cleaned) title, then each non-empty extra text, as the corpus
    writes it."""
    clean = normalize_title if normalize else clean_text
    text = clean(title)
    for extra in extras:
        part = clean(extra)
        if part:
            text += EXTRA_SEPARATOR + part
    return text


def invalid_utf8(text: str) -> str | None:
    """What is wrong when `text` (an argument or a line of stdin, decoded with surrogateescape) held bytes that are
    not UTF-8, e.g. "byte 0x80 at character 1"; None when it is valid."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        byte = text[e.start].encode("utf-8", "surrogateescape")
        return f"byte 0x{byte[0]:02x} at character {e.start + 1}"


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (ANSI and OSC escapes, tabs, newlines) and undecodable bytes
    written as escapes (\\x1b), so a title or a song name cannot move the cursor or retitle the window."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   if not 0xDC80 <= ord(c) <= 0xDCFF else f"\\x{ord(c) - 0xDC00:02x}" for c in text)
