"""Options shared by several commands, and the checked number types every numeric option uses.

Every number a user types is refused at the command line unless it is finite and inside the option's
range, and the range shows in ``--help`` (``[x>=1]``, ``[0<x<=100]``...). ``Real`` is a finite float,
``Count`` an int with an upper bound (a huge value would only fail later, after hours of work).
``check_option_values`` runs the same checks on option values that come from elsewhere (a config file).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import click

from kdcache.errors import KdcacheError

SEED_MAX = 2**32 - 1  # numpy and torch take any seed up to here on every platform


class Real(click.FloatRange):
    """A finite float, optionally bounded (``min_open``/``max_open`` exclude the bound). inf and nan are
    refused: click's FloatRange lets nan through every bound and inf through a lower one."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        if self.min is None and self.max is None:
            return "finite"
        return super()._describe_range()


class Count(click.IntRange):
    """An int in [min, max] (both bounds given, so a huge value is refused before any work)."""

    name = "integer"

    def __init__(self, min: int, max: int) -> None:  # noqa: A002 - click's own argument names
        super().__init__(min, max)


def seed_option(default: int = 0, help: str | None = None):  # noqa: A002
    return click.option("--seed", default=default, show_default=True, type=Count(0, SEED_MAX), help=help)


def device_option(default: str = "auto"):
    return click.option(
        "--device", default=default, show_default=True,
        help="auto (CUDA when present), cpu, cuda or cuda:N.",
    )


def workers_option(default: int = 1):
    return click.option(
        "--num-workers", default=default, show_default=True, type=Count(0, 256),
        help="DataLoader worker processes for audio reading and fbank (0: in the main process).",
    )


def real_list(text: str, option: str, *, minimum: float = 0.0, maximum: float = 1e6) -> tuple[float, ...]:
    """Comma-separated numbers, each finite and in (minimum, maximum]; KdcacheError naming the option."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise KdcacheError(f"{option} {text!r}: expected numbers separated by commas") from None
    if not values:
        raise KdcacheError(f"{option}: give at least one value")
    bad = [v for v in values if not (math.isfinite(v) and minimum < v <= maximum)]
    if bad:
        raise KdcacheError(f"{option} {text!r}: every value must be a finite number in ({minimum:g}, {maximum:g}], "
                           f"got {bad[0]!r}")
    return values


def check_option_values(command: click.Command, values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check option values read from elsewhere (e.g. a YAML config) with the command's own option types.

    ``values`` maps option names (``batch_size`` or ``batch-size``) to values. Returns them converted
    (``"1e-3"`` -> 0.001); an unknown name or a value the option refuses (out of range, not finite) raises
    KdcacheError naming ``source`` and the option. Meant for config files: they pass the same checks as
    the command line.
    """
    if not isinstance(values, Mapping):
        raise KdcacheError(f"{source}: expected a mapping of option names to values")
    params = {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}
    ctx = click.Context(command)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        param = params.get(name)
        if param is None:
            known = ", ".join(sorted(n.replace("_", "-") for n in params))
            raise KdcacheError(f"{source}: unknown option {key!r} for {command.name} (known: {known})")
        try:
            out[name] = param.type_cast_value(ctx, value)
        except click.BadParameter as bad:
            raise KdcacheError(f"{source}: {key}: {bad.format_message()}") from None
    return out
