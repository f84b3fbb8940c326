"""``--config FILE.yaml`` for any command, and the resolved settings written next to its outputs.

A config file is a YAML mapping whose keys are the command's own option names, spelled as on the
command line (``batch-size``) or with underscores (``batch_size``). Its values become the command's
defaults (click's ``default_map``), so flags given on the command line override them. A mapping or
list given for a text option (``model-args: {m_channels: 4}``, ``temperatures: [1, 2]``) is passed as
JSON or as comma-separated values, the way the option reads it. Each value passes the option's own
checks (``cli.options.check_option_values``: finite, in range, a valid choice) when the file is read,
and a refused one is one line naming the file and the key. YAML is read with ``yaml.safe_load``.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import click

from cli.options import check_option_values
from kdcache.errors import KdcacheError

CONFIG_OPTION = "config"
RESOLVED_NAME = "config.yaml"


def _option_names(command: click.Command) -> dict[str, click.Parameter]:
    """Every accepted key (dash and underscore spellings of each long option) -> its parameter."""
    names: dict[str, click.Parameter] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == CONFIG_OPTION or not param.expose_value:
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                key = opt[2:]
                names[key] = param
                names[key.replace("-", "_")] = param
    return names


def canonical_key(param: click.Parameter) -> str:
    """The key a resolved config uses for ``param``: its first long option without dashes."""
    return next(opt[2:] for opt in param.opts if opt.startswith("--"))


def _as_option_value(param: click.Parameter, value: Any) -> Any:
    if isinstance(param.type, click.types.StringParamType):
        if isinstance(value, dict):
            return json.dumps(value)
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
    return value


def read_config_file(path: Path, command: click.Command) -> dict[str, Any]:
    """The ``default_map`` of ``command`` from the YAML file ``path`` (keys: parameter names)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise KdcacheError(f"{path}: cannot read config ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise KdcacheError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as bad:
        where = getattr(bad, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise KdcacheError(f"{path}: not valid YAML{line} ({getattr(bad, 'problem', None) or bad})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KdcacheError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    names = _option_names(command)
    default_map: dict[str, Any] = {}
    given: dict[str, str] = {}  # parameter name -> the key as the file spells it
    for key, value in data.items():
        param = names.get(str(key))
        if param is None:
            close = difflib.get_close_matches(str(key), sorted({canonical_key(p) for p in names.values()}), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise KdcacheError(f"{path}: unknown key '{key}' for {command.name}{hint}")
        if param.name in default_map:
            raise KdcacheError(f"{path}: '{key}' is given twice (as {canonical_key(param)} and {key})")
        default_map[param.name] = _as_option_value(param, value)
        given[param.name] = key
    # The same checks as on the command line (finite numbers in range, choices), named by file and key.
    check_option_values(command, {given[name]: value for name, value in default_map.items()}, str(path))
    return default_map


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is None or ctx.resilient_parsing:
        return
    defaults = read_config_file(Path(value), ctx.command)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["kdcache.config_file"] = value


def config_option(func):
    """``--config FILE.yaml``: option defaults from a YAML file; command-line flags override it."""
    return click.option(
        "--config", type=click.Path(dir_okay=False), default=None, is_eager=True, expose_value=False,
        callback=_load_config,
        help="YAML file of this command's options (keys as on the command line, e.g. batch-size: 64); "
             "flags given here override it. The resolved settings are written next to the outputs.",
    )(func)


def resolved_settings(ctx: click.Context) -> dict[str, Any]:
    """The command's resolved options as config-file keys (JSON options as mappings, paths as text)."""
    out: dict[str, Any] = {}
    for param in ctx.command.params:  # in the order of --help
        if not isinstance(param, click.Option) or not param.expose_value or param.name not in ctx.params:
            continue
        value = ctx.params[param.name]
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[canonical_key(param)] = value
    return out


def resolved_settings_yaml(ctx: click.Context, name: str) -> str:
    """The resolved settings of the running command as a YAML document for a file called ``name``;
    passing that file back with ``--config`` reproduces the same settings."""
    import yaml

    header = f"# kdcache {ctx.command.name}: resolved settings (rerun with --config {name})\n"
    return header + yaml.safe_dump(resolved_settings(ctx), sort_keys=False)


def write_resolved_settings(ctx: click.Context, path: str | Path) -> Path:
    """Write the resolved settings of the running command to ``path`` (YAML), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(resolved_settings_yaml(ctx, path.name), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # torchrun: rank 0 writes


def save_settings_next_to(path: str | Path) -> Path | None:
    """:func:`write_resolved_settings` of the current command, on the main process only (torchrun)."""
    if not _main_process():
        return None
    return write_resolved_settings(click.get_current_context(), path)


def save_settings_in_cache(out: str) -> None:
    """The resolved settings as ``config.yaml`` inside the cache ``out``, a folder or an object-store URL
    (a URL is not a local path: ``Path("s3://b/c")`` would make a folder ``s3:`` in the working directory)."""
    from kdcache.cache.objectstore import CacheLocation

    if not _main_process():
        return
    location = CacheLocation(out)
    if location.local is not None:
        write_resolved_settings(click.get_current_context(), location.local / RESOLVED_NAME)
    else:
        location.write_text(RESOLVED_NAME, resolved_settings_yaml(click.get_current_context(), RESOLVED_NAME))
