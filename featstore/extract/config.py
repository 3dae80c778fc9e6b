"""What ``diccae extract`` computes and how fast: one typed configuration.

Shared by the single-machine pipeline, the Dask runner and the decode/encode stages,
so it lives apart from all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featstore.errors import InputError
from featstore.store.schema import COMPRESSIONS


@dataclass
class ExtractConfig:
    """Everything that decides what ``diccae extract`` computes and how fast.

    ``audio_encoder``/``video_encoder`` may be None to extract one modality only.
    ``audio_config``/``video_config`` override encoder options (e.g. frame count).
    How progress is shown is not configuration: :func:`~featstore.extract.pipeline.extract`
    takes a ``progress`` callback.
    """

    audio_encoder: str | None = "kaldi-fbank"
    video_encoder: str | None = "frame-stats"
    audio_weights: str = "default"
    video_weights: str = "default"
    audio_config: dict[str, Any] = field(default_factory=dict)
    video_config: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    workers: int = 2
    device: str = "auto"
    chunk_rows: int = 1024
    dtype: str = "float16"
    compression: str = "zstd"
    overwrite: bool = False
    label_csv: str | None = None
    manifest_kind: str = "auto"
    decode_timeout: float = 300.0  # seconds one clip may take before its worker is replaced
    encode_threads: int | None = (
        None  # CPU threads for encoding; None: the cores the decode workers leave
    )
    mp_context: str = "spawn"
    splits: tuple[
        str, ...
    ] = ()  # split names kept verbatim besides train/val/test (featstore.store.splits)

    def validate(self) -> None:
        if self.audio_encoder is None and self.video_encoder is None:
            raise InputError("at least one of --audio-encoder / --video-encoder is needed")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise InputError(
                f"--workers must be >= 0 (0 decodes in the main process), got {self.workers}"
            )
        if self.chunk_rows < 1:
            raise InputError(f"--chunk-rows must be >= 1, got {self.chunk_rows}")
        if self.dtype not in ("float16", "float32"):
            raise InputError(f"--dtype must be float16 or float32, got {self.dtype!r}")
        if self.compression not in COMPRESSIONS:
            raise InputError(
                f"--compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}"
            )
