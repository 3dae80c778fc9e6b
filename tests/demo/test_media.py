import av
import numpy as np
import pytest

from demo.media import synthetic_audio, synthetic_frames, write_clip
from featstore.errors import InputError


def _streams(path):
    with av.open(str(path)) as c:
        return sorted(s.type for s in c.streams)


def test_write_clip_roundtrips_video_and_audio(tmp_path):
    frames = synthetic_frames(10, 36, 48, seed=1)
    p = write_clip(tmp_path / "a.mp4", frames=frames, fps=10, audio=synthetic_audio(1.0))
    assert _streams(p) == ["audio", "video"]
    with av.open(str(p)) as c:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert decoded.shape == frames.shape
    # lossy codec at high quality: close to the source on average
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6
    with av.open(str(p)) as c:
        n = sum(f.samples for f in c.decode(audio=0))
    assert 16000 <= n <= 16000 + 2048  # AAC adds priming/padding samples


def test_write_clip_single_stream_files(tmp_path):
    assert _streams(write_clip(tmp_path / "v.mp4", frames=synthetic_frames(4, 16, 16))) == ["video"]
    assert _streams(write_clip(tmp_path / "s.mp4", frames=None, audio=synthetic_audio(0.3))) == [
        "audio"
    ]


def test_write_clip_mpeg4_pads_odd_size(tmp_path):
    p = write_clip(tmp_path / "m.mp4", frames=synthetic_frames(3, 17, 23), video_codec="mpeg4")
    with av.open(str(p)) as c:
        f = next(c.decode(video=0))
    assert (f.height, f.width) == (18, 24)


def test_write_clip_rejects_bad_input(tmp_path):
    with pytest.raises(InputError):
        write_clip(tmp_path / "x.mp4", frames=None, audio=None)
    with pytest.raises(InputError, match="uint8"):
        write_clip(tmp_path / "x.mp4", frames=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="audio"):
        write_clip(tmp_path / "x.mp4", frames=None, audio=np.zeros((3, 100), np.float32))
