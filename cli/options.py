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
