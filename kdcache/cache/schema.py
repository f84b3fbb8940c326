"""The on-disk layout of a teacher cache (DESIGN.md section 5): array names, shapes, dtypes, codecs.

Every row-indexed array ``[N, ...]`` is stored in zarr v3 shards of ``shard_rows`` rows made of
``chunk_rows``-row inner chunks. Codec pipelines (all end in crc32c, so a flipped byte fails on read):

- row arrays: ``sharding_indexed(chunk (chunk_rows, ...), codecs [bytes, crc32c],
  index_codecs [bytes, crc32c])`` -- no compressor (zstd gains < 10% on float16 logits, reads ~3x slower);
- ``progress/done``: chunks of one entry, ``[bytes, crc32c]`` (one file per shard: concurrent writers of
  different shards never share a chunk file);
- ``teacher/head``: one chunk, ``[bytes, crc32c]``;
- strings and ``utterances/num_samples``: ``[vlen-utf8 | bytes, zstd, crc32c]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

FORMAT_VERSION = 1
ATTRS_KEY = "kdcache"  # group attribute holding the provenance / settings dict

LOGITS_MODES = ("dense", "uint8", "factorized")

SPEAKERS = "speakers"
UTT_ID = "utterances/id"
UTT_SPEAKER = "utterances/speaker"
UTT_NUM_SAMPLES = "utterances/num_samples"
UTTERANCE_ARRAYS = (UTT_ID, UTT_SPEAKER, UTT_NUM_SAMPLES)

ROW_UTTERANCE = "rows/utterance"
ROW_START = "rows/start"
ROW_NUM_SAMPLES = "rows/num_samples"
ROW_LABEL = "rows/label"
ROW_AUG_SEED = "rows/aug_seed"
ROW_INPUT_CRC = "rows/input_crc"
ROW_BAD = "rows/bad"  # 1 where the audio could not be read at build time (--skip-bad-audio)

LOGITS = "teacher/logits"
LOGITS_SCALE = "teacher/logits_scale"
LOGITS_OFFSET = "teacher/logits_offset"
EMBEDDING = "teacher/embedding"
EMBEDDING_NORM = "teacher/embedding_norm"
HEAD = "teacher/head"
SALIENCY = "teacher/saliency"
INTEGRATED_LOGITS = "teacher/integrated_logits"
INTEGRATED_EMBEDDING = "teacher/integrated_embedding"
INTEGRATED_EMBEDDING_NORM = "teacher/integrated_embedding_norm"
DONE = "progress/done"

# The recipe arrays the writer receives at creation (key -> array name, dtype).
RECIPE_ARRAYS: dict[str, tuple[str, str]] = {
    "utterance": (ROW_UTTERANCE, "int64"),
    "start": (ROW_START, "int64"),
    "num_samples": (ROW_NUM_SAMPLES, "int64"),
    "label": (ROW_LABEL, "int32"),
    "aug_seed": (ROW_AUG_SEED, "int64"),
}

UTTERANCE_CHUNK = 65536  # entries per chunk of the utterances/* arrays


@dataclass(frozen=True)
class OutputSpec:
    """One teacher output, described once for the writer, the reader, training batches, the
    fingerprint and ``cache info``.

    - ``name``: the output's name in the teacher runner and ``CacheWriter.write_shard`` (``logits``);
    - ``field``: its key in a training batch (``teacher_logits``) and in ``TeacherCache.read``;
    - ``array``: the stored array (``teacher/logits``); ``size``: its per-row shape, ``classes`` [S],
      ``embed`` [D] or ``saliency`` [n_dur, frames, bins];
    - ``codec``: how values are stored (``kdcache.cache.codecs``): ``logits`` (per ``--logits``:
      float16, per-row affine uint8 + scale + offset, or nothing at all, rebuilt from the embedding and
      the head), ``unit_norm`` (float16 unit vector + float32 ``<array>_norm``), ``float16``;
    - ``build_option``: the ``build-teacher-cache`` option that adds it ("" when always there);
    - ``setting``: the settings key that, besides the teacher and the crops, changes its values (part
      of the fingerprint); ``present``: the layout attribute that says it is stored ("" = always).

    Adding an output (say a pooled feature map) is one entry here, the teacher runner that produces
    it, and the methods that read its ``field``.
    """

    name: str
    field: str
    array: str
    size: str
    codec: str
    build_option: str = ""
    setting: str | None = None
    present: str = ""

    def stored(self, layout: CacheLayout) -> bool:
        return not self.present or bool(getattr(layout, self.present))

    def tail(self, layout: CacheLayout) -> tuple[int, ...]:
        return {"classes": (layout.num_classes,), "embed": (layout.embed_dim,),
                "saliency": tuple(layout.saliency_shape or ())}[self.size]

    def arrays(self, layout: CacheLayout) -> list[tuple[str, tuple[int, ...], str, Any]]:
        """(name, per-row shape, dtype, fill value) of each stored array of this output."""
        if not self.stored(layout):
            return []
        nan, tail = float("nan"), self.tail(layout)
        if self.codec == "unit_norm":
            # float16 unit vectors plus a float32 norm: raw ResNet embeddings reach norms of 1e5
            # (WeSpeaker's ResNet293 fixture) and would overflow float16 (max 65504).
            return [(self.array, tail, "float16", nan), (self.array + "_norm", (), "float32", nan)]
        if self.codec == "logits" and layout.logits_mode == "uint8":
            return [(self.array, tail, "uint8", 0), (LOGITS_SCALE, (), "float32", nan),
                    (LOGITS_OFFSET, (), "float32", nan)]
        if self.codec == "logits" and layout.logits_mode == "factorized":
            return []
        return [(self.array, tail, "float16", nan)]


OUTPUTS: tuple[OutputSpec, ...] = (
    OutputSpec("logits", "teacher_logits", LOGITS, "classes", "logits", setting="logits"),
    OutputSpec("embedding", "teacher_embedding", EMBEDDING, "embed", "unit_norm"),
    OutputSpec("saliency", "saliency", SALIENCY, "saliency", "float16", "--saliency", "saliency", "saliency_shape"),
    OutputSpec("integrated_logits", "integrated_logits", INTEGRATED_LOGITS, "classes", "float16",
               "--saliency (IML-KD integrated inputs)", "saliency", "integrated"),
    OutputSpec("integrated_embedding", "integrated_embedding", INTEGRATED_EMBEDDING, "embed", "unit_norm",
               "--saliency (IML-KD integrated inputs)", "saliency", "integrated"),
)


def output(key: str) -> OutputSpec:
    """The output called ``key``: its name, batch field or stored array name."""
    for spec in OUTPUTS:
        if key in (spec.name, spec.field, spec.array):
            return spec
    raise KeyError(f"no teacher output {key!r}; outputs: {', '.join(o.name for o in OUTPUTS)}")


def is_output(key: str) -> bool:
    return any(key in (o.name, o.field, o.array) for o in OUTPUTS)


# Per-shard inputs of CacheWriter.write_shard besides the outputs (short key -> array name).
SHARD_INPUTS: dict[str, str] = {
    "input_crc": ROW_INPUT_CRC,
    "bad": ROW_BAD,
    **{spec.name: spec.array for spec in OUTPUTS},
}

# Which build option adds an optional array (for error messages).
BUILD_OPTION: dict[str, str] = {
    LOGITS: "--logits dense or --logits uint8",
    HEAD: "a teacher with a cosine (AAM) head",
    **{spec.array: spec.build_option for spec in OUTPUTS if spec.build_option},
}
BATCH_FIELD_HINT: dict[str, str] = {spec.field: spec.build_option for spec in OUTPUTS if spec.build_option}


@dataclass(frozen=True)
class CacheLayout:
    """Sizes and storage options of one cache.

    num_rows: N; num_classes: S; embed_dim: D; saliency_shape: (n_dur, frames, bins) or None;
    integrated: whether teacher/integrated_{logits,embedding} exist.
    """

    num_rows: int
    num_classes: int
    embed_dim: int
    logits_mode: str = "dense"
    saliency_shape: tuple[int, int, int] | None = None
    integrated: bool = False
    shard_rows: int = 4096
    chunk_rows: int = 64

    def __post_init__(self) -> None:
        for name in ("num_rows", "num_classes", "embed_dim", "shard_rows", "chunk_rows"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"CacheLayout.{name} must be a positive int, got {value!r}")
        if self.logits_mode not in LOGITS_MODES:
            raise ValueError(f"CacheLayout.logits_mode must be one of {LOGITS_MODES}, got {self.logits_mode!r}")
        if self.shard_rows % self.chunk_rows:
            raise ValueError(
                f"CacheLayout.shard_rows ({self.shard_rows}) must be a multiple of chunk_rows ({self.chunk_rows})"
            )
        if self.saliency_shape is not None:
            shape = tuple(int(v) for v in self.saliency_shape)
            if len(shape) != 3 or min(shape) <= 0:
                raise ValueError(f"CacheLayout.saliency_shape must be (n_dur, frames, bins): {self.saliency_shape!r}")
            object.__setattr__(self, "saliency_shape", shape)

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_rows / self.shard_rows)

    def shard_slice(self, s: int) -> slice:
        """Rows of shard s (the last shard may be short)."""
        if not 0 <= s < self.num_shards:
            raise IndexError(f"shard {s} out of range [0, {self.num_shards})")
        return slice(s * self.shard_rows, min((s + 1) * self.shard_rows, self.num_rows))

    def shard_of(self, row: int) -> int:
        return int(row) // self.shard_rows

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["saliency_shape"] = list(self.saliency_shape) if self.saliency_shape else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CacheLayout:
        d = dict(d)
        if d.get("saliency_shape") is not None:
            d["saliency_shape"] = tuple(d["saliency_shape"])
        return cls(**d)


@dataclass(frozen=True)
class ArraySpec:
    """How one array is created. chunks is the stored (shard) chunk shape; inner is set when sharded."""

    name: str
    shape: tuple[int, ...]
    dtype: Any
    chunks: tuple[int, ...]
    inner: tuple[int, ...] | None
    fill_value: Any
    compress: bool = False

    @property
    def row_indexed(self) -> bool:
        return self.inner is not None

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``zarr.create_array`` / ``Group.create_array``."""
        string = self.dtype is str
        tail = [ZstdCodec(level=3), Crc32cCodec()] if self.compress else [Crc32cCodec()]
        if self.inner is not None:
            serializer: Any = ShardingCodec(
                chunk_shape=self.inner,
                codecs=[BytesCodec(), Crc32cCodec()],
                index_codecs=[BytesCodec(), Crc32cCodec()],
            )
            compressors: Any = None
        else:
            serializer = "auto" if string else BytesCodec()
            compressors = tail
        return dict(
            shape=self.shape,
            dtype=self.dtype,
            chunks=self.chunks,
            serializer=serializer,
            compressors=compressors,
            filters=None,
            fill_value=self.fill_value,
        )


def _row_spec(layout: CacheLayout, name: str, tail: tuple[int, ...], dtype: str, fill: Any) -> ArraySpec:
    return ArraySpec(
        name=name,
        shape=(layout.num_rows, *tail),
        dtype=dtype,
        chunks=(layout.shard_rows, *tail),
        inner=(layout.chunk_rows, *tail),
        fill_value=fill,
    )


def row_array_specs(layout: CacheLayout) -> dict[str, ArraySpec]:
    """Specs of the row-indexed arrays ([N, ...], sharded) that this layout stores."""
    specs = [_row_spec(layout, name, (), dtype, 0) for name, dtype in RECIPE_ARRAYS.values()]
    specs.append(_row_spec(layout, ROW_INPUT_CRC, (), "uint32", 0))
    specs.append(_row_spec(layout, ROW_BAD, (), "uint8", 0))
    for spec in OUTPUTS:
        specs.extend(_row_spec(layout, name, tail, dtype, fill) for name, tail, dtype, fill in spec.arrays(layout))
    return {spec.name: spec for spec in specs}


def array_specs(layout: CacheLayout, num_utterances: int, *, with_head: bool) -> dict[str, ArraySpec]:
    """Specs of every array in a cache with this layout and U = num_utterances."""
    S, D, U = layout.num_classes, layout.embed_dim, num_utterances
    uchunk = (max(1, min(U, UTTERANCE_CHUNK)),)
    specs = {
        SPEAKERS: ArraySpec(SPEAKERS, (S,), str, (S,), None, "", compress=True),
        UTT_ID: ArraySpec(UTT_ID, (U,), str, uchunk, None, "", compress=True),
        UTT_SPEAKER: ArraySpec(UTT_SPEAKER, (U,), str, uchunk, None, "", compress=True),
        UTT_NUM_SAMPLES: ArraySpec(UTT_NUM_SAMPLES, (U,), "int64", uchunk, None, 0, compress=True),
        DONE: ArraySpec(DONE, (layout.num_shards,), "bool", (1,), None, False),
    }
    if with_head:
        specs[HEAD] = ArraySpec(HEAD, (S, D), "float32", (S, D), None, 0.0)
    specs.update(row_array_specs(layout))
    return specs

