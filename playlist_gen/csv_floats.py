"""CSV lines of float vectors, byte for byte what `"%.6g" % value` writes, built with numpy lookups.

Each value is rounded to 6 significant digits (m * 10**(e - 5)) and gets a cell of fixed slots: sign,
"0.000" lead, the digits with a possible point after each, exponent, separator. The slots of a digit
pattern are computed from m, or, once a process has formatted millions of values, gathered from a table per
point position over every m; the lead and exponent come from a table per e; unused slots stay 0 and are
deleted when the block becomes bytes.
"""

import functools

import numpy as np

DIGITS = 6  # significant digits, as %.6g
LEAD, BODY, TAIL = 5, 2 * DIGITS - 1, 5  # "0.000"; digits with a point slot after each but the last; "e+123"
CELL = 1 + LEAD + BODY + TAIL + 1  # and the sign and the separator
_E_RANGE = 330  # float64 exponents: 1e-324 .. 1.8e308
_POWERS = 10.0 ** np.arange(-300, 301)  # within an ulp of 10**p (exact for 0 <= p <= 22)
_ROW = 16  # table rows padded to 16 bytes: numpy gathers those 5x faster than 11-byte rows
_NUL_BACK = bytes.maketrans(b"\xfe", b"\x00")  # 0xfe never occurs in UTF-8: it stands for a NUL of an id


def _python_digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, e) of the given values through Python's correctly rounded formatting (the rare hard cases)."""
    texts = [f"{v:.{DIGITS - 1}e}" for v in values.tolist()]  # "1.23457e-05"
    return (np.array([int(t[0] + t[2:DIGITS + 1]) for t in texts], dtype=np.int32),
            np.array([int(t[DIGITS + 2:]) for t in texts], dtype=np.int32))


def significant_digits(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, e) with a = m * 10**(e - 5) rounded to 6 digits as printf rounds, 10**5 <= m < 10**6 (m = e = 0
    for a = 0), for finite a >= 0. The scaling by 10**(5 - e) is off by an ulp at most, so it decides the
    rounding except within 1e-6 of a tie; those values, subnormals and log10's off-by-ones (a few per
    million) are rounded by Python instead."""
    nonzero = a > 0
    in_float32 = np.clip(np.where(nonzero, a, 1.0), 1e-37, 1e37).astype(np.float32)  # fast log10; out of range: hard
    e = np.floor(np.log10(in_float32)).astype(np.int32)  # may be one off
    scaled = a * _POWERS[DIGITS - 1 - e + 300]
    m = np.rint(scaled)
    hard = ((np.abs(scaled - m) > 0.5 - 1e-6) | (m >= 10.0**DIGITS) | (m < 10.0**(DIGITS - 1))) & nonzero
    with np.errstate(invalid="ignore"):  # an out-of-range m is hard, replaced below
        m, e = np.where(nonzero & ~hard, m, 0).astype(np.int32), np.where(nonzero, e, 0)
    if hard.any():
        m[hard], e[hard] = _python_digits(a[hard])
    return m, e


_TABLES: dict[int, np.ndarray] = {}  # point class -> (900001, _ROW) slots of every m, built when they pay
_direct_left = 6_000_000  # values formatted without the tables first: each table costs ~1.1 s to build, as
# much as ~6M values' slots computed directly (a demo world's 35k values paid 1.5 s for tables before)


def _body(m: np.ndarray, point_class: int) -> np.ndarray:
    """(len(m), _ROW) slots of the digits of each m (0 or 10**5 <= m < 10**6), without trailing zeros but at least
    `point_class` digits, and a point after digit point_class - 1 where more digits follow (class 0: no point,
    as in 0.00123457)."""
    m = m.astype(np.int64)
    digits = (m[:, None] // 10 ** np.arange(DIGITS - 1, -1, -1)) % 10 + ord("0")
    significant = DIGITS - sum((m % 10**k == 0).astype(np.int64) for k in range(1, DIGITS))
    written = np.maximum(significant, point_class)
    body = np.zeros((len(m), _ROW), dtype=np.uint8)
    body[:, 0:BODY:2] = np.where(np.arange(DIGITS) < written[:, None], digits, 0)
    if 0 < point_class < DIGITS:
        body[:, 2 * point_class - 1] = np.where(significant > point_class, ord("."), 0)
    return body


def _bodies(m: np.ndarray, point_class: int) -> np.ndarray:
    """`_body(m, point_class)` as 16-byte items: computed for the first `_direct_left` values of a process, then
    gathered from a table of every m (10x faster per value once built)."""
    global _direct_left
    if point_class not in _TABLES and len(m) <= _direct_left:
        _direct_left -= len(m)
        return _body(m, point_class).view(np.dtype((np.void, _ROW))).ravel()
    if point_class not in _TABLES:
        _TABLES[point_class] = _body(np.concatenate([[0], np.arange(10**(DIGITS - 1), 10**DIGITS)]), point_class)
    return _rows(_TABLES[point_class], np.where(m == 0, 0, m - (10**(DIGITS - 1) - 1)))


@functools.cache
def _lead_and_tail_table() -> np.ndarray:
    """(2 * _E_RANGE + 1, LEAD + TAIL) slots per exponent e (row e + _E_RANGE): "0.00" before the digits of
    a %g in fixed notation below 1, "e-05" after those in exponent notation."""
    table = np.zeros((2 * _E_RANGE + 1, _ROW), dtype=np.uint8)
    for e in range(-_E_RANGE, _E_RANGE + 1):
        lead = "0." + "0" * (-e - 1) if -4 <= e < 0 else ""
        tail = "" if -4 <= e < DIGITS else f"e{e:+03d}"
        table[e + _E_RANGE, :len(lead)] = np.frombuffer(lead.encode(), dtype=np.uint8)
        table[e + _E_RANGE, LEAD:LEAD + len(tail)] = np.frombuffer(tail.encode(), dtype=np.uint8)
    return table


def _rows(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """table[index] for a (n, 16) uint8 table, each row gathered as one 16-byte item (10x numpy's 2-D take)."""
    return table.view(np.dtype((np.void, _ROW))).ravel()[index]


def format_cells(x: np.ndarray, separators) -> np.ndarray:
    """(len(x), CELL) bytes: x[i] as "%.6g" writes it and then its separator; unused bytes are 0."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    m, e = significant_digits(np.where(finite, np.abs(x), 0.0))
    fixed = (e >= -4) & (e < DIGITS)  # as %g: 0.000123457 .. 123457, else 1.23457e-05
    point_class = np.where(fixed, np.maximum(e + 1, 0), 1)  # 0: no point (0.00123), c: after digit c - 1
    cells = np.empty((len(x), CELL), dtype=np.uint8)
    cells[:, 0] = (np.signbit(x) & ~np.isnan(x)) * np.uint8(ord("-"))
    lead_tail = _rows(_lead_and_tail_table(), e + _E_RANGE).view(np.uint8).reshape(len(x), _ROW)
    cells[:, 1:1 + LEAD] = lead_tail[:, :LEAD]
    cells[:, 1 + LEAD + BODY:CELL - 1] = lead_tail[:, LEAD:LEAD + TAIL]
    body = np.empty(len(x), dtype=np.dtype((np.void, _ROW)))
    for c in np.flatnonzero(np.bincount(point_class, minlength=DIGITS + 1)):
        rows = np.flatnonzero(point_class == c)
        body[rows] = _bodies(m[rows], int(c))
    cells[:, 1 + LEAD:1 + LEAD + BODY] = body.view(np.uint8).reshape(len(x), _ROW)[:, :BODY]
    for text, where in ((b"nan", np.isnan(x)), (b"inf", np.isinf(x))):
        if where.any():
            cells[where, 1:CELL - 1] = np.frombuffer(text.ljust(CELL - 2, b"\0"), dtype=np.uint8)
    cells[:, CELL - 1] = separators
    return cells


def csv_lines(prefixes: list[str], X: np.ndarray) -> bytes:
    """UTF-8 lines: each `prefix` followed by its row of X as %.6g values joined by commas."""
    heads = [p.encode("utf-8").replace(b"\0", b"\xfe") for p in prefixes]
    width = max(map(len, heads), default=0)
    heads = np.frombuffer(b"".join(h.ljust(width, b"\0") for h in heads), dtype=np.uint8).reshape(len(X), width)
    separators = np.full(X.shape, ord(","), dtype=np.uint8)
    separators[:, -1] = ord("\n")
    cells = format_cells(X.ravel(), separators.ravel()).reshape(len(X), -1)
    return np.concatenate([heads, cells], axis=1).tobytes().translate(_NUL_BACK, b"\0")
