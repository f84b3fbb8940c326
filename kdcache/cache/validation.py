"""What the reader checks before it trusts a cache: arrays whose metadata parses, codecs it may decode,
utterance ids that are safe paths, and progress flags that decode. (The root attributes: attributes.py.)"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import zarr

from kdcache.errors import IntegrityError, one_line

# The codecs kdcache writes (schema.py). An array whose metadata names any other codec is refused before
# a byte of it is decoded: a cache from elsewhere must not pick a decoder (zarr's codec registry can hold
# third-party codecs, e.g. ones that unpickle).
ALLOWED_CODECS = frozenset({"bytes", "crc32c", "sharding_indexed", "zstd", "vlen-utf8"})


def foreign_codecs(array: zarr.Array) -> list[str]:
    """The codecs of ``array`` (sharding's inner pipelines included) that kdcache never writes."""
    return sorted(set(_codec_names(array.metadata.to_dict().get("codecs"))) - ALLOWED_CODECS)


def checked_array(group: zarr.Group, name: str, source: str) -> zarr.Array:
    """``group[name]``, refused (IntegrityError naming ``source`` and the array) when it is missing, its
    ``zarr.json`` does not parse, it is a group, or it names a codec kdcache never writes."""
    try:
        node = group[name]
    except KeyError:
        raise IntegrityError(f"{source}: array {name} is missing") from None
    except (ValueError, TypeError) as bad:  # zarr's parse of a malformed array zarr.json
        raise IntegrityError(f"{source}: array {name} has malformed metadata ({type(bad).__name__}: "
                             f"{one_line(bad)[:200]})") from bad
    if not isinstance(node, zarr.Array):
        raise IntegrityError(f"{source}: {name} is a group, expected an array")
    foreign = foreign_codecs(node)
    if foreign:
        raise IntegrityError(
            f"{source}: array {name} declares codec(s) {', '.join(foreign)}, which kdcache never writes; "
            "refusing to decode it (only " + ", ".join(sorted(ALLOWED_CODECS)) + " are read)"
        )
    return node


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
