"""Typed reads of the fields of a JSON document from outside (cache attributes, a model's config.json).

A document that parses is not yet a document that is right: every field is read through ``Fields``,
which checks its type and range and raises one line naming the file and the dotted field,
e.g. ``cache.zarr/zarr.json: attributes.kdcache.layout.chunk_rows must be an integer >= 1, got 0``.
bool is never taken for an int, and floats must be finite.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from kdcache.errors import KdcacheError

_MISSING = object()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Fields:
    """The fields of one JSON object at ``where`` (a dotted path) in the document ``source``."""

    def __init__(self, data: Any, source: str, where: str, error: type[KdcacheError] = KdcacheError) -> None:
        self.source, self.where, self.error = source, where, error
        if not isinstance(data, dict):
            self.fail(f"{where} must be an object, got {_kind(data)}")
        self.data: dict[str, Any] = data

    def fail(self, message: str) -> None:
        raise self.error(f"{self.source}: {message}")

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, default: Any) -> tuple[bool, Any]:
        """(present, value); a missing field without a default fails."""
        if key in self.data:
            return True, self.data[key]
        if default is _MISSING:
            self.fail(f"{self._path(key)} is missing")
        return False, default

    def integer(self, key: str, minimum: int | None = None, maximum: int | None = None,
                default: Any = _MISSING) -> Any:
        present, value = self._get(key, default)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{self._path(key)} must be an integer, got {_kind(value)} {_shown(value)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.fail(f"{self._path(key)} must be an integer in {_range(minimum, maximum)}, got {value}")
        return value

    def number(self, key: str, minimum: float | None = None, maximum: float | None = None,
               min_open: bool = False, default: Any = _MISSING) -> Any:
        present, value = self._get(key, default)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(f"{self._path(key)} must be a finite number, got {_kind(value)} {_shown(value)}")
        low = minimum is not None and (value <= minimum if min_open else value < minimum)
        if low or (maximum is not None and value > maximum):
            self.fail(f"{self._path(key)} must be a number in {_range(minimum, maximum, min_open)}, got {value}")
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        present, value = self._get(key, default)
        if present and not isinstance(value, bool):
            self.fail(f"{self._path(key)} must be true or false, got {_kind(value)} {_shown(value)}")
        return value

    def string(self, key: str, choices: Iterable[str] | None = None, default: Any = _MISSING,
               nullable: bool = False) -> Any:
        present, value = self._get(key, default)
        if not present or (nullable and value is None):
            return value
        if not isinstance(value, str):
            self.fail(f"{self._path(key)} must be a string, got {_kind(value)} {_shown(value)}")
        if choices is not None and value not in tuple(choices):
            self.fail(f"{self._path(key)} must be one of {', '.join(choices)}, got {_shown(value)}")
        return value

    def obj(self, key: str, nullable: bool = False, default: Any = _MISSING) -> Fields | None:
        """The object at ``key`` (None for null when ``nullable``, or when absent with default None)."""
        present, value = self._get(key, default)
        if not present or (nullable and value is None):
            return None
        return Fields(value, self.source, self._path(key), self.error)

    def array(self, key: str, nullable: bool = False, default: Any = _MISSING) -> list | None:
        present, value = self._get(key, default)
        if not present or (nullable and value is None):
            return value
        if not isinstance(value, list):
            self.fail(f"{self._path(key)} must be an array, got {_kind(value)} {_shown(value)}")
        return value

    def only(self, allowed: Iterable[str]) -> None:
        """Refuse keys outside ``allowed`` (a newer or foreign document)."""
        extra = sorted(set(self.data) - set(allowed))
        if extra:
            self.fail(f"{self.where} has unknown field(s) {', '.join(map(str, extra[:5]))}")


def _range(minimum: float | None, maximum: float | None, min_open: bool = False) -> str:
    low = "(" if min_open else "["
    lo = "-inf" if minimum is None else f"{minimum:g}"
    hi = "inf" if maximum is None else f"{maximum:g}"
    return f"{low}{lo}, {hi}{']' if maximum is not None else ')'}"
