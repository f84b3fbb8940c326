"""What kdcache runs on: package versions, the device, and whether the native libraries load.

Versions come from the installed distributions' metadata, so they can be reported even when a native
library (torch's, torchaudio's) fails to load. That failure is the commonest broken install: PyPI's
torchaudio 2.11.1 cannot load next to torch 2.11.0 (``libc10.so`` not found), and any torchaudio needs
the CUDA build of torch.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from kdcache.errors import KdcacheError

REPORTED_PACKAGES = ("kdcache", "torch", "torchaudio", "zarr", "numpy")
# Imported in this order: torchaudio needs torch, and its import loads libtorchaudio.so.
NATIVE_MODULES = ("numpy", "torch", "torchaudio", "zarr")
INSTALL_HINT = 'python3 -m pip install -c constraints.txt -e ".[dev]"  (in a kdcache checkout; README, Install)'


def installed_version(package: str) -> str:
    """The installed version of a distribution, or ``"not installed"`` (kdcache itself: its own
    ``__version__``, so that a source checkout on ``PYTHONPATH`` reports one too)."""
    if package == "kdcache":
        import kdcache

        return kdcache.__version__
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """``{package: version}`` for :data:`REPORTED_PACKAGES`, read without importing them."""
    return {name: installed_version(name) for name in REPORTED_PACKAGES}


def _version_list() -> str:
    return ", ".join(f"{name} {version}" for name, version in versions().items() if name != "kdcache")


def check_native_libraries() -> None:
    """Import the compiled dependencies; a failure becomes one :class:`KdcacheError` line naming the
    versions found and the command that installs the tested ones."""
    for module in NATIVE_MODULES:
        try:
            importlib.import_module(module)
        except (ImportError, OSError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise KdcacheError(
                f"{module} cannot be loaded ({reason}); found {_version_list()}; install the tested "
                f"versions: {INSTALL_HINT}"
            ) from None


def device_description() -> str:
    """``"CUDA (NVIDIA H200, 1 device)"`` or ``"CPU (no CUDA device)"``; needs torch to load."""
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"CUDA ({torch.cuda.get_device_name(0)}, {count} device{'s' if count > 1 else ''})"
    built = "CUDA build" if torch.version.cuda else "CPU-only build"
    return f"CPU (no CUDA device; torch is a {built})"


def version_report() -> str:
    """The lines ``kdcache --version`` prints: kdcache, its main dependencies, and the device."""
    lines = [f"{name} {version}" for name, version in versions().items()]
    try:
        check_native_libraries()
        lines.append(f"device: {device_description()}")
    except KdcacheError as err:
        lines.append(f"device: unknown ({err})")
    return "\n".join(lines)
