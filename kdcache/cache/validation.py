"""What the reader checks before it trusts a cache: codecs it may decode, utterance ids that are safe
paths, and progress flags that decode."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import zarr

# The codecs kdcache writes (schema.py). An array whose metadata names any other codec is refused before
# a byte of it is decoded: a cache from elsewhere must not pick a decoder (zarr's codec registry can hold
# third-party codecs, e.g. ones that unpickle).
ALLOWED_CODECS = frozenset({"bytes", "crc32c", "sharding_indexed", "zstd", "vlen-utf8"})


def foreign_codecs(array: zarr.Array) -> list[str]:
    """The codecs of ``array`` (sharding's inner pipelines included) that kdcache never writes."""
    return sorted(set(_codec_names(array.metadata.to_dict().get("codecs"))) - ALLOWED_CODECS)


def _codec_names(codecs: Any) -> list[str]:
    """Names of a codec pipeline (metadata dicts or codec objects), sharding's inner pipelines included."""
    names: list[str] = []
    for codec in codecs or ():
        doc = codec if isinstance(codec, dict) else codec.to_dict()
        names.append(str(doc.get("name")))
        config = doc.get("configuration") or {}
        for key in ("codecs", "index_codecs"):
            names.extend(_codec_names(config.get(key)))
    return names


def unsafe_utterance_id(utt_id: str) -> str | None:
    """Why a cached utterance id is not a safe path relative to the corpus root (None when it is)."""
    if not utt_id or "\0" in utt_id:
        return "empty or holds a NUL byte"
    if utt_id.startswith("/") or re.match(r"^[A-Za-z]:", utt_id):
        return "absolute (must be relative to the corpus root)"
    if "\\" in utt_id:
        return "holds a backslash (ids use '/')"
    if ".." in utt_id.split("/"):
        return "holds '..' (would escape the corpus root)"
    return None


def read_done(done: zarr.Array) -> np.ndarray:
    """progress/done as [num_shards] bool. An entry that does not decode (a full disk can leave its
    one-entry chunk file empty) counts as not done: the build writes that shard again."""
    try:
        return np.asarray(done[:], dtype=bool)
    except (ValueError, RuntimeError, IndexError, TypeError):
        pass
    out = np.zeros(done.shape[0], dtype=bool)
    for s in range(done.shape[0]):
        try:
            out[s] = bool(done[s])
        except (ValueError, RuntimeError, IndexError, TypeError):
            continue
    return out
