"""Reading an operator's JSON configuration file (response rules, risk weights) strictly.

Python's ``json`` module is lenient where a configuration file must not be: it accepts ``NaN``
and ``Infinity``, lets a duplicated key silently win, parses a 5,000-digit integer (and then
raises a ``ValueError`` far from the file), recurses until ``RecursionError`` on deep nesting and
reads any bytes. Each of those turned a typo, or a hostile file, into a traceback or into a value
nobody wrote (``"dry_run": "false"`` live, a weight of ``-inf``). This module refuses all of them
with a :class:`FileProblem` that names the file and, where it can, the place — so that the callers
can switch the feature off and say why, instead of failing the alerts that do not need it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import ValidationError

from shared.config import app_file

MAX_BYTES = 1_000_000  # a rules file with 100 rules is ~50 kB
MAX_DEPTH = 16  # the deepest real shape (rules[].when.repeat.count) is 5
MAX_NUMBER_CHARS = 40  # 1e308 has 5; a float's 17 significant digits and exponent fit in 25


class FileProblem(ValueError):
    """The file cannot be used; ``str()`` names the file and the field or place."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FileProblem(f"duplicate key {key!r} (one of the two values would be silently ignored)")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise FileProblem(f"{name} is not a number a configuration may hold")


def _number(text: str, kind: type[int] | type[float]) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        raise FileProblem(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = kind(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise FileProblem(f"{text} is out of range (not a finite number)")
    return value


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects, strings skipped (one pass, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_strict(data: bytes | str, source: str) -> Any:
    """The JSON document in ``data``; :class:`FileProblem` naming ``source`` for anything lenient."""
    if len(data) > MAX_BYTES:
        raise FileProblem(f"{source} is {len(data):,} bytes (at most {MAX_BYTES:,})")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileProblem(f"{source} is not UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if _depth(text) > MAX_DEPTH:
        raise FileProblem(f"{source} is nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(
            text.removeprefix("\ufeff"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_constant,
            parse_int=lambda t: _number(t, int),
            parse_float=lambda t: _number(t, float),
        )
    except FileProblem as exc:
        raise FileProblem(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise FileProblem(f"{source} is not JSON (line {exc.lineno}, column {exc.colno})") from None


def read_strict(path: str) -> Any:
    """The file's JSON document (relative paths from the app's root, as deployed)."""
    try:
        found = app_file(path)
        with found.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise FileProblem(f"{path} cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    return parse_strict(data, path)


def where(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as a person writes it: ``rules[2].then[0].isolation_type``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def first_error(exc: ValidationError, source: str, place: str | None = None) -> str:
    """The first validation error, as ``file: field: what is wrong``."""
    first = exc.errors()[0]
    return f"{source}: {place if place is not None else where(tuple(first['loc']))}: {first['msg']}"
