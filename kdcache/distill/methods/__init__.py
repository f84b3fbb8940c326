"""The registry of training methods (``train-student --loss NAME``): one file per method.

Every module of this package, the modules named in the environment variable ``KDCACHE_METHODS``
(comma-separated, importable module names) and those of the ``kdcache.methods`` entry-point group are
imported once; each :class:`Method` subclass they define with a ``name`` is a method. Adding a method
is adding a file (``docs/extending.md``).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import textwrap
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from kdcache.distill.methods.base import Method, Option, RunInfo
from kdcache.errors import KdcacheError

ENV_VAR = "KDCACHE_METHODS"
ENTRY_POINTS = "kdcache.methods"
_BUILTIN = ("ce", "embedding", "kd", "dkd", "mlkd", "imlkd")  # listed first, in this order

_REGISTRY: dict[str, type[Method]] = {}
_LOADED: set[str] = set()


def register(cls: type[Method]) -> type[Method]:
    """Add a method class (also usable as a decorator); a second class under one name is refused."""
    if not (isinstance(cls, type) and issubclass(cls, Method)) or not cls.name:
        raise KdcacheError(f"{cls!r} is not a Method subclass with a name")
    known = _REGISTRY.get(cls.name)
    if known is not None and known is not cls:
        raise KdcacheError(f"method {cls.name!r} is defined twice ({known.__module__} and {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def _load_module(module_name: str, origin: str) -> None:
    if module_name in _LOADED:
        return
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise KdcacheError(f"{origin}: cannot import method module {module_name!r} ({err})") from None
    _LOADED.add(module_name)
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Method) and value.name and value.__module__ == module.__name__:
            register(value)


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            _load_module(f"{__name__}.{info.name}", __name__)
    for module_name in filter(None, (m.strip() for m in os.environ.get(ENV_VAR, "").split(","))):
        _load_module(module_name, ENV_VAR)
    for entry in entry_points(group=ENTRY_POINTS):
        _load_module(entry.value.split(":")[0], f"entry point {entry.name}")


def methods() -> dict[str, type[Method]]:
    """Every method by name: the built-in ones first, then the others alphabetically."""
    _discover()
    order = [n for n in _BUILTIN if n in _REGISTRY] + sorted(set(_REGISTRY) - set(_BUILTIN))
    return {n: _REGISTRY[n] for n in order}


def names() -> list[str]:
    return list(methods())


def get(name: str) -> type[Method]:
    """The method class called ``name``; a one-line error listing the choices otherwise."""
    found = methods().get(name)
    if found is None:
        raise KdcacheError(f"--loss {name}: choose one of {', '.join(names())}")
    return found


def option_names() -> list[str]:
    """Every option name of every method (their CLI aliases are ``--NAME`` with dashes)."""
    seen: dict[str, None] = {}
    for cls in methods().values():
        seen.update((o.name, None) for o in cls.options)
    return list(seen)


def resolve_options(name: str, loss_args: Mapping[str, Any] | None = None,
                    aliases: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options of method ``name`` from ``loss_args`` (``--loss-args`` JSON) and ``aliases`` (values of
    the per-option flags such as ``--beta``; ``None`` = not given).

    An alias is checked against its option wherever a method has one (``--eta 0`` is refused whatever the
    method) and applies to the methods that have it; others ignore it, so one command line can switch
    ``--loss``. Giving one option two different values is refused.
    """
    cls = get(name)
    given = dict(loss_args or {})
    for key, value in (aliases or {}).items():
        if value is None:
            continue
        option = cls.option(key) or next((o for c in methods().values() if (o := c.option(key))), None)
        if option is None:
            raise KdcacheError(f"--{key.replace('_', '-')}: no method has this option")
        value = option.parse(value, option.flag)
        if cls.option(key) is None:
            continue
        if key in given and option.parse(given[key], f"--loss-args {key}") != value:
            raise KdcacheError(f"{option.flag} {value} and --loss-args {key} {given[key]!r} disagree; give one")
        given[key] = value
    return cls.resolve(given)


def build(name: str, options: Mapping[str, Any], run: RunInfo) -> Method:
    """An instance of method ``name`` with checked ``options`` for this run."""
    return get(name)(options, run)


def describe(width: int = 100) -> str:
    """Each method with its options, wrapped to ``width``: the text of ``--help`` and the docs."""
    lines = []
    for cls in methods().values():
        lines.extend(textwrap.wrap(f"{cls.name}: {cls.summary}", width, subsequent_indent="    "))
        for option in cls.options:
            lines.extend(textwrap.wrap(option.describe(), width, initial_indent="  - ", subsequent_indent="    "))
    return "\n".join(lines)


__all__ = ["ENV_VAR", "Method", "Option", "RunInfo", "build", "describe", "get", "methods", "names",
           "option_names", "register", "resolve_options"]
