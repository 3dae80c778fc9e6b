"""Extraction: manifest -> decoded clips -> embeddings written into a :mod:`featstore.store`.

Modules, in the order a clip goes through them: ``manifest`` (CSV, CAV-MAE JSON or a
class-folder tree -> rows), ``specs``/``frames``/``decode`` (PyAV decoding into what
an encoder asks for), ``feed`` (decoding ahead in worker processes that may crash),
``encoders`` (the registry of encoders by name), ``encode`` (batches of one chunk),
``config``/``pipeline`` (the resumable run on one machine) and ``dask`` (the same run
as one Dask task per chunk).  Long runs report progress as
:class:`featstore.progress.ProgressUpdate` values; nothing here renders.

May import :mod:`featstore.store`, :mod:`featstore.common`, :mod:`featstore.errors`
and :mod:`featstore.progress`; never the later stages.  Importing the package loads
neither torch, PyAV nor Dask (each is imported where it is used).
"""

from featstore.extract.config import ExtractConfig
from featstore.extract.dask import extract_dask
from featstore.extract.decode import decode_clip, decode_row
from featstore.extract.encoders import Encoder, get_encoder, list_encoders, register_encoder
from featstore.extract.manifest import Manifest, ManifestEntry, load_manifest
from featstore.extract.pipeline import (
    ExtractSummary,
    RowsResult,
    build_encoders,
    extract,
    extract_rows,
    open_or_create_store,
    pending_ranges,
)
from featstore.extract.specs import AudioSpec, DecodedClip, VideoSpec

__all__ = [
    "AudioSpec",
    "DecodedClip",
    "Encoder",
    "ExtractConfig",
    "ExtractSummary",
    "Manifest",
    "ManifestEntry",
    "RowsResult",
    "VideoSpec",
    "build_encoders",
    "decode_clip",
    "decode_row",
    "extract",
    "extract_dask",
    "extract_rows",
    "get_encoder",
    "list_encoders",
    "load_manifest",
    "open_or_create_store",
    "pending_ranges",
    "register_encoder",
]
