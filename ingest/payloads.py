"""Payload formats -> typed columns (pure).

Formats: ``seed`` (the space-separated C-MAPSS line the original pipeline sent), ``json`` (one object),
``auto`` (JSON when the text starts with ``{``, else seed) and ``raw`` (stored as text, no typed columns).

Parsing is delegated to ``enginehub.datasets.codecs`` (``decode_line``, ``decode_json``, ``row_to_columns``,
``PayloadError``). Until that module is importable, a minimal built-in parser of the same 26-field layout
(``enginehub.datasets.schema``) is used so the consumer works on its own.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from enginehub.ingest.model import INTEGER_COLUMNS, TYPED_COLUMNS

LOG = logging.getLogger(__name__)

FORMATS = ("seed", "json", "auto", "raw")
JSON_FIELDS: tuple[str, ...] = (
    ("unit", "cycle") + tuple(f"setting{i}" for i in range(1, 4)) + tuple(f"sensor{i}" for i in range(1, 22))
)


class PayloadFormatError(ValueError):
    """The payload does not parse in the rule's format (the reason goes to the dead-letter row)."""


def _fallback_columns(values: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(TYPED_COLUMNS, values, strict=True):
        if name in INTEGER_COLUMNS:
            number = float(value)
            if not number.is_integer():
                raise PayloadFormatError(f"{name!r} must be an integer, got {value!r}")
            out[name] = int(number)
        else:
            number = float(value)
            if not math.isfinite(number):
                raise PayloadFormatError(f"{name!r} is not a finite number: {value!r}")
            out[name] = number
    return out


def _fallback_seed(text: str) -> dict[str, Any]:
    fields = text.split()
    if len(fields) != len(TYPED_COLUMNS):
        raise PayloadFormatError(f"seed line needs {len(TYPED_COLUMNS)} fields, got {len(fields)}")
    try:
        return _fallback_columns(fields)
    except ValueError as exc:
        raise PayloadFormatError(f"seed line: {exc}") from exc


def _fallback_json(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise PayloadFormatError(f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise PayloadFormatError(f"JSON payload must be an object, got {type(obj).__name__}")
    missing = [f for f in JSON_FIELDS if f not in obj]
    if missing:
        raise PayloadFormatError(f"JSON payload lacks {', '.join(missing[:5])}")
    values = [obj[f] for f in JSON_FIELDS]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise PayloadFormatError("JSON payload fields must be numbers")
    try:
        return _fallback_columns(values)
    except ValueError as exc:
        raise PayloadFormatError(f"JSON payload: {exc}") from exc


def _load_codecs() -> tuple[Callable[[str], dict[str, Any]], Callable[[str], dict[str, Any]], str]:
    try:
        codecs = importlib.import_module("enginehub.datasets.codecs")
        decode_line = codecs.decode_line
        decode_json = codecs.decode_json
        row_to_columns = codecs.row_to_columns
        payload_error = codecs.PayloadError
    except (ImportError, AttributeError):
        return _fallback_seed, _fallback_json, "builtin"

    # The decoders return a well-formed Row or raise (their error contract), so the columns can be taken
    # from it without row_to_columns' second validation when the column names are ours.
    same_columns = tuple(getattr(codecs, "COLUMN_NAMES", ())) == TYPED_COLUMNS

    def wrap(decode: Callable[[str], Any]) -> Callable[[str], dict[str, Any]]:
        def parse(text: str) -> dict[str, Any]:
            try:
                row = decode(text)
                if same_columns:
                    return dict(zip(TYPED_COLUMNS, (row[0], row[1], *row[2], *row[3]), strict=True))
                return dict(row_to_columns(row))
            except payload_error as exc:
                raise PayloadFormatError(str(exc)) from exc

        return parse

    return wrap(decode_line), wrap(decode_json), "enginehub.datasets.codecs"


_SEED, _JSON, CODEC_SOURCE = _load_codecs()


def effective_format(fmt: str, text: str) -> str:
    """``auto`` resolved for one payload: ``json`` when it starts with ``{``, else ``seed``."""
    if fmt == "auto":
        head = text[:1]
        if head == "{":
            return "json"
        if not head.isspace():  # no leading blanks to skip: no copy of the text
            return "seed"
        return "json" if text.lstrip().startswith("{") else "seed"
    return fmt


def parse_payload(fmt: str, text: str) -> dict[str, Any]:
    """Typed columns of one payload, or :class:`PayloadFormatError` with a reason."""
    if fmt == "raw":
        return {}
    fmt = effective_format(fmt, text)
    if fmt == "seed":
        return _SEED(text)
    if fmt == "json":
        return _JSON(text)
    raise ValueError(f"unknown payload format {fmt!r} (expected one of {', '.join(FORMATS)})")
