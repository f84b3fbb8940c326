"""The ``kdcache`` command line: parse options, call the library, print results.

Errors a user can fix end in one line on stderr and exit status 2 (1 for integrity failures);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from kdcache.environment import check_native_libraries, version_report
from kdcache.errors import KdcacheError


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_report())
        ctx.exit(0)


class KdcacheGroup(click.Group):
    """A click group that turns library errors into one line and an exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KdcacheError as err:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"kdcache: error: {err}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("kdcache: interrupted (finished work is kept; rerun the same command to resume)", err=True)
            ctx.exit(130)
        except (OSError, MemoryError) as err:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"kdcache: error: {err} (rerun with --debug for details)", err=True)
            ctx.exit(2)


@click.group(cls=KdcacheGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    envvar="KDCACHE_THREADS",
    help="torch intra-op threads of the main process (env KDCACHE_THREADS). DataLoader workers always "
    "use 1. More threads pay off only for large models on idle cores: on a 2-core machine a 2-thread "
    "fbank or small-model forward was up to 20x slower than 1 thread (README, Performance).",
)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the versions of kdcache, torch, torchaudio, zarr and numpy, and the device, then exit.")
@click.pass_context
def main(ctx: click.Context, debug: bool, threads: int) -> None:
    """kdcache: knowledge distillation for speaker verification from a cached teacher.

    \b
    Typical flow:
      kdcache make-synthetic-corpus demo
      kdcache train-teacher --data demo/train --arch resnet34 --out demo/teacher
      kdcache evaluate --model demo/teacher --data demo/test --trials demo/test/trials.txt
      kdcache build-teacher-cache --data demo/train --teacher demo/teacher --out demo/cache.zarr
      kdcache train-student --cache demo/cache.zarr --data demo/train --student xvector --loss dkd --beta 8 --out demo/student
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    check_native_libraries()
    import torch

    torch.set_num_threads(threads)


def _register() -> None:
    from cli import (commands_cache, commands_data, commands_model, commands_report, commands_study,
                     commands_train, commands_voxceleb)

    for module in (commands_data, commands_train, commands_cache, commands_model, commands_voxceleb, commands_report,
                   commands_study):
        for command in module.COMMANDS:
            main.add_command(command)


_register()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
