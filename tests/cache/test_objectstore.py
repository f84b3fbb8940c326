"""CacheLocation and the writer on an object-store URL without a server (fsspec's memory://), and the one-line
store errors. The same code against a real S3 server: tests/s3/."""

from __future__ import annotations

import json
import uuid

import pytest
import zarr.storage

from kdcache.cache import TeacherCache
from kdcache.cache.objectstore import CacheLocation, describe_store_error, is_object_url
from kdcache.errors import KdcacheError
from tests.cache.helpers import build, small_layout


def test_urls_and_paths():
    assert is_object_url("s3://b/c.zarr") and is_object_url("memory://x") and is_object_url("gs://b/c")
    assert not is_object_url("/tmp/c.zarr") and not is_object_url("file:///tmp/c.zarr") and not is_object_url("c.zarr")


def test_a_cache_written_to_an_object_url_reads_back_and_publishes_consolidated_metadata(monkeypatch):
    url = f"memory://kdcache-{uuid.uuid4().hex}/c.zarr"
    roots: list[dict] = []
    real_set = zarr.storage.FsspecStore.set

    async def recording_set(self, key, value):  # every write of the root zarr.json, in order
        if key == "zarr.json":
            roots.append(json.loads(value.to_bytes()))
        return await real_set(self, key, value)

    monkeypatch.setattr(zarr.storage.FsspecStore, "set", recording_set)
    layout = small_layout("dense")
    loc = CacheLocation(url)
    assert not loc.exists() and loc.read_settings() is None
    build(url, layout, shards=[0, 1])
    # Once initialized, the root is never written without its consolidated metadata.
    initialized = [r for r in roots if r["attributes"].get("kdcache", {}).get("initialized")]
    assert initialized and all(r.get("consolidated_metadata") for r in initialized)
    assert initialized[-1]["attributes"]["kdcache"]["complete"] is False
    cache = TeacherCache.open(url)
    assert cache.missing_shards() == list(range(2, layout.num_shards)) and not cache.is_complete
    assert loc.exists() and not loc.is_empty() and loc.read_settings()["initialized"] is True

    build(url, layout)  # resume: the other shards, then complete
    assert TeacherCache.open(url).is_complete and roots[-1]["attributes"]["kdcache"]["complete"] is True
    loc.remove()
    assert not loc.exists()


def test_store_errors_are_one_line_naming_the_url():
    url = "s3://bkt/c.zarr"

    class ClientError(Exception):
        def __init__(self, code):
            super().__init__(f"An error occurred ({code})")
            self.response = {"Error": {"Code": code}}

    def wrapped(exc_type, code):
        err = exc_type("translated")
        err.__cause__ = ClientError(code)
        return err

    text = describe_store_error(url, wrapped(PermissionError, "InvalidAccessKeyId"), "listing")
    assert text.startswith(url) and "refused the credentials" in text and "\n" not in text
    assert "access denied" in describe_store_error(url, wrapped(PermissionError, "AccessDenied"), "writing")
    assert "bucket bkt does not exist" in describe_store_error(url, wrapped(FileNotFoundError, "NoSuchBucket"), "x")
    assert "did not answer" in describe_store_error(url, ConnectionResetError("reset"), "reading shard 3")


def test_check_writable_passes_on_a_writable_store_and_leaves_nothing():
    url = f"memory://kdcache-{uuid.uuid4().hex}/c.zarr"
    loc = CacheLocation(url)
    loc.fs.makedirs(loc.root.split("/", 1)[0], exist_ok=True)
    loc.check_writable()
    assert not loc.exists()


def test_a_missing_local_cache_is_not_an_object_store():
    with pytest.raises(KdcacheError, match="cache not found"):
        TeacherCache.open("/nonexistent/kdcache/c.zarr")
