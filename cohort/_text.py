"""Small text helpers shared by the modules: SQL literals, one-line errors, JSON scanning."""

from __future__ import annotations

import re
from collections.abc import Iterable

_WHITESPACE = " \t\r\n"


def sql_literal(value: str) -> str:
    """A DuckDB string literal (for the few places where a value cannot be bound, e.g. a view's path)."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Iterable[str]) -> str:
    """A DuckDB list literal of strings."""
    return "[" + ", ".join(sql_literal(v) for v in values) + "]"


def short_error(exc: BaseException, limit: int = 300) -> str:
    """One line for an exception; for a failed connection, its root cause (``[Errno 111] Connection refused``)."""
    text = str(exc)
    cause = re.search(r"(\[Errno -?\d+\][^'\")]*|Read timed out|IncompleteRead\([^)]*\))", text)
    if cause:
        return f"{type(exc).__name__}: {cause.group(1).strip()}"
    text = text.splitlines()[0] if text else type(exc).__name__
    return text[:limit]


def skip_whitespace(text: str, pos: int, chars: str = _WHITESPACE) -> int:
    """The first position at or after ``pos`` whose character is not in ``chars`` (``len(text)`` at the end)."""
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``1,414 series`` (``words``: the plural when it is not ``word + "s"``)."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"
