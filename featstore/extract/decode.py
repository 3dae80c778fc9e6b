"""Decode one clip with PyAV into exactly what the encoders consume.

Why it looks like this:

* **Seek-free, one pass.**  Seeking in damaged or variable-frame-rate files is the
  most common source of wrong frames and hangs; demuxing once from the start is
  robust for every container and costs little for the short clips this tool is for.
* **Uniform over the clip.**  The T output frames are the frames at the centres of
  T equal segments of the decoded frame sequence (index ``floor((i + 0.5) N / T)``);
  clips with fewer than T frames repeat frames.  Only the chosen frames are shrunk
  and colour-converted (that costs about as much as decoding), using the frame
  count the container reports; if that count turns out wrong the video is decoded
  again with the true count, so the choice never depends on bad metadata.
* **Bounded memory for any length.**  Without a frame count, frames are kept
  (already shrunk) with a stride that doubles whenever more than ``keep`` are
  held, so a ten-minute clip never holds more than ``keep`` small frames.
* **Display orientation.**  Rotation from the display matrix (phone videos) is
  applied, so the encoder sees what a viewer sees.
* **Missing is not failed.**  A file without an audio (video) stream gives
  ``audio=None`` (``video=None``); the store flags that modality missing instead of
  filling it with a constant.  Anything else that goes wrong raises
  :class:`~featstore.errors.DecodeError` with the reason.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import DecodeError
from featstore.extract.frames import FrameKeeper, FrameSelector
from featstore.extract.specs import AudioSpec, DecodedClip, VideoSpec

#: the specs are defined in featstore.extract.specs and re-exported here
__all__ = [
    "IMAGE_EXTENSIONS",
    "AudioSpec",
    "DecodedClip",
    "VideoSpec",
    "decode_clip",
    "decode_row",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _av():
    import av

    return av


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class _AudioCollector:
    def __init__(self, spec: AudioSpec):
        av = _av()
        self.spec = spec
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=spec.sample_rate)
        self.parts: list[np.ndarray] = []
        self.n = 0
        self.limit = (
            None if spec.max_seconds is None else int(round(spec.max_seconds * spec.sample_rate))
        )

    @property
    def full(self) -> bool:
        return self.limit is not None and self.n >= self.limit

    def add(self, frame) -> None:
        if self.full:
            return
        frame.pts = None  # the resampler only needs sample continuity; broken pts must not stop it
        for out in self.resampler.resample(frame):
            self._push(out)

    def _push(self, out) -> None:
        arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        self.parts.append(arr)
        self.n += arr.size

    def result(self) -> np.ndarray:
        for out in self.resampler.resample(None):
            self._push(out)
        if self.n == 0:
            raise DecodeError("audio stream has no decodable samples")
        audio = np.concatenate(self.parts)
        if self.limit is not None:
            audio = audio[: self.limit]
        if not np.isfinite(audio).all():
            raise DecodeError("audio stream decoded to NaN/Inf samples")
        return np.ascontiguousarray(audio)


# ------------------------------------------------------------------- decoding
def _open(path: Path):
    av = _av()
    if not path.exists():
        raise DecodeError(f"file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise DecodeError(f"empty file: {path}")
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except Exception as exc:
        raise DecodeError(f"cannot open {path.name} as media: {_reason(exc)}") from None


def _decode_streams(
    path: Path,
    video: VideoSpec | None,
    audio: AudioSpec | None,
    keep: int,
    *,
    frame_count: int | None = None,
    use_frame_count: bool = True,
):
    """One demux pass over ``path``; returns (frames|None, audio|None, info, frames_seen).

    With ``frame_count`` (or the container's own count when ``use_frame_count``) only
    the chosen frames are converted; ``info["count_mismatch"]`` tells the caller that
    the container's count was wrong and a second pass with the true count is needed.
    """
    info: dict[str, Any] = {}
    container = _open(path)
    try:
        vs = container.streams.video[0] if (video is not None and container.streams.video) else None
        as_ = (
            container.streams.audio[0] if (audio is not None and container.streams.audio) else None
        )
        if not container.streams.video and not container.streams.audio:
            raise DecodeError(f"{path.name} has neither a video nor an audio stream")
        picker: FrameSelector | FrameKeeper | None = None
        if vs is not None and video is not None:
            n = frame_count or (int(vs.frames or 0) if use_frame_count else 0)
            picker = FrameSelector(video, n) if n > 0 else FrameKeeper(video, keep)
            info["fps"] = float(vs.average_rate) if vs.average_rate else None
            info["size"] = [vs.codec_context.height, vs.codec_context.width]
        collector = _AudioCollector(audio) if as_ is not None and audio is not None else None
        if as_ is not None:
            info["sample_rate_in"] = as_.codec_context.sample_rate
        streams = [s for s in (vs, as_) if s is not None]
        if not streams:  # none of the requested streams exists: the callers mark them missing
            return None, None, info
        try:
            for packet in container.demux(*streams):
                if (
                    packet.stream is as_
                    and collector is not None
                    and collector.full
                    and picker is None
                ):
                    break
                for frame in packet.decode():
                    if packet.stream is vs and picker is not None:
                        picker.add(frame)
                    elif collector is not None:
                        collector.add(frame)
        except DecodeError:
            raise
        except Exception as exc:
            # damaged data mid-stream: keep what decoded so far only if every requested
            # stream gave something, otherwise the clip is broken
            got_v = picker is None or picker.count > 0
            got_a = collector is None or collector.n > 0
            if not (got_v and got_a):
                raise DecodeError(f"{path.name}: decoding failed: {_reason(exc)}") from None
            info["warning"] = f"stopped early: {_reason(exc)}"
        if isinstance(picker, FrameSelector) and not picker.exact:
            info["count_mismatch"] = picker.count
            frames = None
        else:
            frames = picker.result() if picker is not None else None
        samples = collector.result() if collector is not None else None
        if picker is not None:
            info["frames_decoded"] = picker.count
        return frames, samples, info
    finally:
        container.close()


def _decode_file(
    path: Path, video: VideoSpec | None, audio: AudioSpec | None, keep: int, use_frame_count: bool
):
    frames, samples, info = _decode_streams(
        path, video, audio, keep, use_frame_count=use_frame_count
    )
    if (
        "count_mismatch" in info
    ):  # the container's frame count was wrong: redo video with the true one
        true_count = info.pop("count_mismatch")
        if true_count == 0:
            raise DecodeError(f"{path.name}: video stream has no decodable frames")
        frames, _, vinfo = _decode_streams(path, video, None, keep, frame_count=true_count)
        if "count_mismatch" in vinfo:
            raise DecodeError(
                f"{path.name}: frame count changes between decodes ({true_count} vs {vinfo['count_mismatch']})"
            )
        info["frame_count_corrected"] = True
    return frames, samples, info


def _frame_folder_images(folder: Path, clip_id: str) -> list[Path]:
    """CAV-MAE frame layout ``folder/frame_<k>/<id>.jpg``, else images in ``folder``."""
    ks = []
    for sub in folder.glob("frame_*"):
        m = re.fullmatch(r"frame_(\d+)", sub.name)
        if m and sub.is_dir():
            for ext in IMAGE_EXTENSIONS:
                f = sub / f"{Path(clip_id).name}{ext}"
                if f.is_file():
                    ks.append((int(m.group(1)), f))
                    break
    if ks:
        return [f for _, f in sorted(ks)]
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def _decode_frame_folder(folder: Path, clip_id: str, spec: VideoSpec) -> np.ndarray:
    images = _frame_folder_images(folder, clip_id)
    if not images:
        raise DecodeError(
            f"frame folder {folder} has no frames for {clip_id!r} (expected frame_<k>/{clip_id}.jpg or images)"
        )
    keeper = FrameSelector(spec, len(images))
    for img in images:
        container = _open(img)
        try:
            frame = next(container.decode(video=0))
        except Exception as exc:
            raise DecodeError(f"cannot decode frame image {img}: {_reason(exc)}") from None
        finally:
            container.close()
        keeper.add(frame)
    return keeper.result()


def _refuse_special_file(path: Path | None) -> None:
    """A FIFO, socket or device would block the decoder (or never end): refuse it by kind."""
    if path is None:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: the decoder reports it with its own reason
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            raise DecodeError(
                f"{path} is {kind}, not a media file; skipped (it could block forever)"
            )


def decode_clip(
    path: str | Path,
    *,
    video: VideoSpec | None,
    audio: AudioSpec | None,
    audio_path: str | Path | None = None,
    clip_id: str = "",
    keep: int | None = None,
    use_frame_count: bool = True,
) -> DecodedClip:
    """Decode ``path`` (and ``audio_path`` when the sound lives in its own file).

    ``video``/``audio`` set to None skip that modality.  Returns ``None`` for a
    requested modality whose stream the file does not have.  Raises DecodeError.
    """
    path = Path(path)
    if video is not None and video.num_frames < 1:
        raise DecodeError("num_frames must be >= 1")
    for p in (path, None if audio_path is None else Path(audio_path)):
        _refuse_special_file(p)
    keep = keep or max(256, 4 * (video.num_frames if video else 1))
    separate_audio = audio_path is not None and Path(audio_path) != path
    frames = samples = None
    info: dict[str, Any] = {}
    try:
        if video is not None and path.is_dir():
            frames = _decode_frame_folder(path, clip_id or path.name, video)
        elif video is not None or (audio is not None and not separate_audio):
            frames, samples, info = _decode_file(
                path, video, None if separate_audio else audio, keep, use_frame_count
            )
        if separate_audio and audio is not None and audio_path is not None:
            _, samples, ainfo = _decode_file(Path(audio_path), None, audio, keep, use_frame_count)
            info.update(ainfo)
    except DecodeError:
        raise
    except Exception as exc:  # anything unexpected from the codec stack
        raise DecodeError(f"{path.name}: {_reason(exc)}") from None
    if frames is None and samples is None:
        raise DecodeError(f"{path.name} has no stream of the requested modalities")
    if frames is not None and video is not None and frames.shape[1:3] != tuple(video.size):
        raise DecodeError(f"internal: frames came out {frames.shape}, expected size {video.size}")
    return DecodedClip(video=frames, audio=samples, info=info)


def decode_row(
    row: int,
    path: str,
    audio_path: str | None,
    clip_id: str,
    video: VideoSpec | None,
    audio: AudioSpec | None,
) -> tuple[int, DecodedClip | None, str | None]:
    """Worker entry point: ``(row, clip, None)`` or ``(row, None, reason)``; never raises.

    Lives here (not in :mod:`featstore.extract.pipeline`) so spawned decode workers import
    only PyAV and NumPy, not torch.
    """
    try:
        return (
            row,
            decode_clip(path, video=video, audio=audio, audio_path=audio_path, clip_id=clip_id),
            None,
        )
    except DecodeError as exc:
        return row, None, str(exc)
    except Exception as exc:  # pragma: no cover - defensive: a worker must never die on a clip
        return row, None, f"unexpected decoder error: {type(exc).__name__}: {_reason(exc)}"
