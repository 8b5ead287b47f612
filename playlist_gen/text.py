"""Title text normalisation shared by the corpus (training) and the CLI (generation).

Kept free of pandas so generate_playlist.py can clean a title without importing it (~0.4 s of CPU).
"""

import re
import unicodedata

_SPACE_RE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """NFKC, then every run of whitespace (tabs, newlines, ideographic spaces) -> one space, stripped."""
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", str(text))).strip()


def title_key(text: str) -> str:
    """The key grouped splits use: `Chill  Vibes` and `chill vibes` are one title."""
    return clean_text(text).casefold()
