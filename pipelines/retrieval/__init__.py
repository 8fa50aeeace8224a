"""Feature-vector retrieval for PP-ShiTuV2: ``IndexData`` and the faiss index builders.

Used by :mod:`pipelines.pp_shitu_v2` and by index maintenance tasks/CLI. Functions take
feature rows (not images) so they serve any feature model and any storage location.
"""

from .builder import (
    IVF_APPEND_WARN_SHARE,
    IVF_MIN_VECTORS,
    StaleCentroidsWarning,
    append_index,
    build_index,
    compact_index,
    ivf_structure,
    remove_index,
)
from .gallery import load_gallery, parse_gallery_lines
from .index_data import ID_MAP_FILE, INDEX_INFO_FILE, META_FILE, VECTOR_FILE, IndexData, IndexFormatError, IndexMeta

__all__ = [
    "ID_MAP_FILE",
    "INDEX_INFO_FILE",
    "IVF_APPEND_WARN_SHARE",
    "IVF_MIN_VECTORS",
    "META_FILE",
    "VECTOR_FILE",
    "IndexData",
    "IndexFormatError",
    "IndexMeta",
    "StaleCentroidsWarning",
    "append_index",
    "build_index",
    "compact_index",
    "ivf_structure",
    "load_gallery",
    "parse_gallery_lines",
    "remove_index",
]
