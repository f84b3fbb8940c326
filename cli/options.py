"""Options shared by several commands."""

from __future__ import annotations

import click


def device_option(default: str = "auto"):
    return click.option(
        "--device", default=default, show_default=True,
        help="auto (CUDA when present), cpu, cuda or cuda:N.",
    )


def workers_option(default: int = 1):
    return click.option(
        "--num-workers", default=default, show_default=True, type=click.IntRange(0),
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
