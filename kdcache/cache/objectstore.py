"""Where a cache is written: a local folder or an object-store prefix (s3://, gs://, ...), behind one interface.

An object store has no folders, locks or renames, so a cache written there relies on what it does have:
- every shard of every array is one whole object, and each rank of a ``torchrun`` build writes only its own
  share of the shards (``CacheWriter.pending_shards``), so concurrent writers never touch the same object;
- ``progress/done`` holds one object per shard, set after the shard's arrays: a killed build resumes
  from the flags in the store;
- the root ``zarr.json`` (attributes and consolidated metadata) is rewritten last by ``finalize``.

Endpoint and credentials come the usual way: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
(or ~/.aws, AWS_PROFILE) for botocore, and fsspec's configuration (FSSPEC_S3='{"key": ...}' or
``~/.config/fsspec/*.json``). Errors of the store become one line naming the URL (KdcacheError).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import fsspec

from kdcache.errors import KdcacheError

from . import schema as sc

PROBE_PREFIX = ".kdcache-write-probe-"


def is_object_url(url: str | Path) -> bool:
    """True for a URL with a scheme other than file:// (s3://, gs://, http(s)://, memory://, ...)."""
    text = str(url)
    return "://" in text and not text.startswith("file://")


def _error_code(err: BaseException) -> str:
    """The S3 error code behind an s3fs error (botocore's ClientError is its __cause__), else ''."""
    for e in (err, err.__cause__, err.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


def describe_store_error(url: str, err: BaseException, doing: str) -> str:
    """One line naming the URL and what the store said: credentials, a missing bucket, or no answer."""
    text = " ".join(str(err).split())[:200] or type(err).__name__
    code = _error_code(err)
    bucket = urlparse(url).netloc
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken") or (
            isinstance(err, PermissionError) and code != "AccessDenied" and "denied" not in text.lower()):
        return (f"{url}: {doing} failed: the object store refused the credentials ({code or text}); check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, ~/.aws, FSSPEC_S3) and AWS_ENDPOINT_URL")
    if isinstance(err, PermissionError) or code == "AccessDenied":
        return f"{url}: {doing} failed: access denied ({code or text}); these credentials may not do that in bucket {bucket}"
    if code == "NoSuchBucket" or (isinstance(err, FileNotFoundError) and "bucket" in text.lower()):
        return f"{url}: bucket {bucket} does not exist (create it first, or check AWS_ENDPOINT_URL)"
    return (f"{url}: {doing} failed ({type(err).__name__}: {text}); the object store did not answer: "
            "what is stored is kept, rerun the same command when it does")


def store_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the store failed (network, credentials, server), not a bug in kdcache."""
    types: list[type[BaseException]] = [OSError, asyncio.TimeoutError, TimeoutError]
    try:
        import aiohttp

        types.append(aiohttp.ClientError)
    except ImportError:  # pragma: no cover
        pass
    try:
        import botocore.exceptions

        types += [botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError]
    except ImportError:
        pass
    return tuple(types)


class CacheLocation:
    """A cache's place: exists / read_settings / is_empty / remove / store, for a folder or a URL prefix."""

    def __init__(self, path_or_url: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        text = str(path_or_url)
        self.remote = is_object_url(text)
        self.url = text
        self.storage_options = storage_options
        self.local = None if self.remote else Path(unquote(urlparse(text).path) if text.startswith("file://") else text)
        self._fs: Any = None
        self._root = ""

    def __str__(self) -> str:
        return self.url

    @property
    def fs(self) -> Any:
        if self._fs is None:
            try:
                self._fs, root = fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))
            except ImportError as e:
                raise KdcacheError(f"{self.url}: {e} (pip install 'kdcache[s3]' for s3://)") from None
            self._root = root.rstrip("/")
        return self._fs

    @property
    def root(self) -> str:
        _ = self.fs
        return self._root

    def _call(self, doing: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdcacheError:
            raise
        except store_error_types() as err:
            raise KdcacheError(describe_store_error(self.url, err, doing)) from None

    def write_text(self, name: str, text: str) -> None:
        """Write the file ``name`` inside the cache (UTF-8), a local file or one object."""
        if self.local is not None:
            (self.local / name).write_text(text, encoding="utf-8")
            return
        self._call(f"writing {name}", self.fs.pipe_file, f"{self.root}/{name}", text.encode("utf-8"))

    def read_settings(self) -> dict[str, Any] | None:
        """attrs["kdcache"] of the cache there, or None when there is no kdcache cache."""
        if not self.remote:
            from .writer import read_settings

            return read_settings(self.local)
        try:
            raw = self.fs.cat_file(f"{self.root}/zarr.json")
        except FileNotFoundError:
            return None
        except store_error_types() as err:
            raise KdcacheError(describe_store_error(self.url, err, "reading zarr.json")) from None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(doc, dict) or doc.get("node_type") != "group":
            return None
        settings = doc.get("attributes", {}).get(sc.ATTRS_KEY)
        return settings if isinstance(settings, dict) else None

    def exists(self) -> bool:
        if not self.remote:
            return self.local.exists()
        return bool(self._list(limit_one=True))

    def is_empty(self) -> bool:
        if not self.remote:
            return self.local.is_dir() and not any(self.local.iterdir())
        return not self._list(limit_one=True)

    def _list(self, limit_one: bool = False) -> list[str]:
        self.fs.invalidate_cache()
        try:
            keys = self._call("listing", self.fs.find, self.root, maxdepth=None if not limit_one else 1,
                              withdirs=False)
        except FileNotFoundError:
            return []
        # Some stores (SeaweedFS) keep folder markers: the prefix itself, or keys ending in '/'.
        return [k for k in keys if k.rstrip("/") != self.root and not k.endswith("/")]

    def remove(self) -> None:
        if not self.remote:
            shutil.rmtree(self.local)
            return
        keys = self._list()
        if keys:
            self._call("deleting the old cache", self.fs.rm, keys)

    def store(self, read_only: bool = False) -> Any:
        """A zarr store of this location."""
        if not self.remote:
            from zarr.storage import LocalStore

            return LocalStore(self.local, read_only=read_only)
        from zarr.storage import FsspecStore

        _ = self.fs
        try:
            return FsspecStore.from_url(self.url, storage_options=self.storage_options, read_only=read_only)
        except ImportError as e:
            raise KdcacheError(f"{self.url}: {e} (pip install 'kdcache[s3]' for s3://)") from None

    def check_writable(self) -> None:
        """Before any teacher work: the bucket exists, the credentials are accepted and may write there.

        Writes and deletes one small probe object beside the cache. Raises KdcacheError naming the URL."""
        if not self.remote:
            return
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.ls(bucket, refresh=True)
        except FileNotFoundError as err:
            raise KdcacheError(describe_store_error(self.url, err if "bucket" in str(err).lower()
                                                    else FileNotFoundError("bucket does not exist"), "listing")) from None
        except store_error_types() as err:
            raise KdcacheError(describe_store_error(self.url, err, "listing the bucket")) from None
        probe = f"{self.root}/{PROBE_PREFIX}{uuid.uuid4().hex}"
        self._call("writing a test object", self.fs.pipe_file, probe, b"kdcache write probe\n")
        self._call("deleting the test object", self.fs.rm_file, probe)
