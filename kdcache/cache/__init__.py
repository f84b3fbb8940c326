"""kdcache.cache: the teacher-output store (a sharded, checksummed zarr v3 group; DESIGN.md section 5)."""

from .codecs import factorized_logits, quantize_uint8
from .info import cache_info, format_info
from .reader import TeacherCache
from .sampler import BlockSampler, RandomRowSampler
from .schema import FORMAT_VERSION, CacheLayout
from .verify import VerifyReport, sample_rows, verify_cache
from .writer import CacheWriter

__all__ = [
    "FORMAT_VERSION",
    "BlockSampler",
    "CacheLayout",
    "CacheWriter",
    "RandomRowSampler",
    "TeacherCache",
    "VerifyReport",
    "cache_info",
    "factorized_logits",
    "format_info",
    "quantize_uint8",
    "sample_rows",
    "verify_cache",
]
