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


class LazyChoice(click.Choice):
    """A choice among names the library defines, read when first needed: importing their modules loads
    torch or zarr, which ``kdcache --help`` and ``--version`` should not wait for. ``load()`` returns
    the names."""

    def __init__(self, load) -> None:
        self._load = load
        super().__init__(())

    @property
    def choices(self):
        return tuple(self._load())

    @choices.setter
    def choices(self, _value) -> None:
        pass


def _method_names():
    from kdcache.distill.methods import names

    return names()


def _logits_modes():
    from kdcache.cache.schema import LOGITS_MODES

    return LOGITS_MODES


def _integrated_input_modes():
    from kdcache.distill.integrated import INTEGRATED_INPUT_MODES

    return INTEGRATED_INPUT_MODES


def _score_norms():
    from kdcache.evaluate.verification import SCORE_NORMS

    return SCORE_NORMS


def method_choice() -> LazyChoice:
    """``--loss``: the methods of kdcache's registry."""
    return LazyChoice(_method_names)


LOGITS_MODES = LazyChoice(_logits_modes)
INTEGRATED_INPUT_MODES = LazyChoice(_integrated_input_modes)
SCORE_NORMS = LazyChoice(_score_norms)


class MethodsHelpCommand(click.Command):
    """A command whose --help ends with the registry's methods and their options."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help_text(ctx, formatter)
        from kdcache.distill.methods import describe

        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text("Methods (--loss) and their options (--loss-args JSON):")
            with formatter.indentation():
                for line in describe(width=max(40, formatter.width - formatter.current_indent)).splitlines():
                    formatter.write(" " * formatter.current_indent + line + "\n")


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

    ``values`` maps option names (``batch_size``, ``batch-size``, or a long option's own spelling such
    as ``logits`` for ``--logits``) to values. Returns them converted, keyed by parameter name
    (``"1e-3"`` -> 0.001); an unknown name or a value the option refuses (out of range, not finite, of
    the wrong type) raises KdcacheError naming ``source`` and the option. Meant for config files: they
    pass the same checks as the command line.
    """
    if not isinstance(values, Mapping):
        raise KdcacheError(f"{source}: expected a mapping of option names to values")
    params: dict[str, click.Option] = {}
    for p in command.params:
        if isinstance(p, click.Option) and p.name:
            params[p.name] = p
            for opt in p.opts:
                if opt.startswith("--"):
                    params.setdefault(opt[2:].replace("-", "_"), p)
    ctx = click.Context(command)
    out: dict[str, Any] = {}
    for key, value in values.items():
        param = params.get(str(key).replace("-", "_"))
        if param is None:
            known = ", ".join(sorted({p.name.replace("_", "-") for p in params.values() if p.name}))
            raise KdcacheError(f"{source}: unknown option {key!r} for {command.name} (known: {known})")
        try:
            out[param.name] = param.type_cast_value(ctx, value)
        except click.BadParameter as bad:
            raise KdcacheError(f"{source}: {key}: {bad.format_message()}") from None
        except (TypeError, ValueError):  # a YAML list or mapping where the option takes one value
            raise KdcacheError(f"{source}: {key}: expected {param.type.name}, got {type(value).__name__} "
                               f"{value!r}"[:300]) from None
    return out
