import numpy as np
import pytest
from clipfactory import make_clip

from demo.media import write_clip
from featstore.errors import DecodeError
from featstore.extract.decode import AudioSpec, VideoSpec, decode_clip, decode_row


def _ramp_clip(path, n_frames, fps=10.0):
    """Frame t is a flat grey of value 8 + 15 * t: decoded brightness tells the frame index."""
    frames = np.stack([np.full((24, 32, 3), 8 + 15 * t, np.uint8) for t in range(n_frames)])
    return write_clip(path, frames=frames, fps=fps)


def _frame_index(img):
    return int(round((img.astype(float).mean() - 8) / 15))


def test_frames_sampled_at_segment_centres(tmp_path):
    p = _ramp_clip(tmp_path / "ramp.mp4", 16)
    clip = decode_clip(
        p, video=VideoSpec(num_frames=4, size=(16, 16), resize_short=16), audio=AudioSpec()
    )
    assert clip.audio is None  # video-only file: audio missing, not zeros
    assert [_frame_index(f) for f in clip.video] == [2, 6, 10, 14]


def test_short_clip_repeats_frames_and_long_clip_bounded(tmp_path):
    short = decode_clip(
        _ramp_clip(tmp_path / "s.mp4", 3),
        video=VideoSpec(num_frames=6, size=(8, 8), resize_short=8),
        audio=None,
    )
    assert [_frame_index(f) for f in short.video] == [0, 0, 1, 1, 2, 2]
    # keep=4 forces stride doubling: the result still spans the whole clip evenly
    # without a container frame count, keep=4 forces stride doubling: the result
    # still spans the whole clip evenly
    spec = VideoSpec(num_frames=4, size=(8, 8), resize_short=8)
    long = decode_clip(
        _ramp_clip(tmp_path / "l.mp4", 16), video=spec, audio=None, keep=4, use_frame_count=False
    )
    assert [_frame_index(f) for f in long.video] == [0, 4, 8, 12]
    full = decode_clip(tmp_path / "l.mp4", video=spec, audio=None, use_frame_count=False)
    assert [_frame_index(f) for f in full.video] == [2, 6, 10, 14]  # same choice as with the count


def test_resize_crop_and_stretch_shapes_for_odd_sizes(unusual_clips):
    odd = unusual_clips["odd"]  # 17x23 at 7.3 fps, 44.1 kHz audio
    c = decode_clip(
        odd, video=VideoSpec(num_frames=16, size=(112, 112), resize_short=128), audio=AudioSpec()
    )
    assert c.video.shape == (16, 112, 112, 3) and c.video.dtype == np.uint8
    s = decode_clip(odd, video=VideoSpec(num_frames=3, size=(20, 30), mode="stretch"), audio=None)
    assert s.video.shape == (3, 20, 30, 3)
    # 0.7 s at 44.1 kHz -> ~0.7 s at 16 kHz mono float32 (AAC adds a little padding)
    assert c.audio.dtype == np.float32 and c.audio.ndim == 1
    assert 0.69 * 16000 <= c.audio.size <= 0.7 * 16000 + 2048


def test_audio_resampled_mono_and_truncated(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack(
        [0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)]
    ).astype(np.float32)
    p = write_clip(tmp_path / "st.mp4", frames=None, audio=stereo, sample_rate=44100)
    c = decode_clip(p, video=VideoSpec(), audio=AudioSpec())
    assert c.video is None
    assert 16000 <= c.audio.size <= 16000 + 2048
    spectrum = np.abs(np.fft.rfft(c.audio[2000:14000]))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert abs(peak_hz - 440) < 5  # pitch preserved by resampling
    cut = decode_clip(p, video=None, audio=AudioSpec(max_seconds=0.25))
    assert cut.audio.size == 4000


def test_single_stream_files(unusual_clips):
    a = decode_clip(
        unusual_clips["audio_only"],
        video=VideoSpec(num_frames=4, size=(8, 8), resize_short=8),
        audio=AudioSpec(),
    )
    assert a.video is None and a.audio.size > 0
    v = decode_clip(
        unusual_clips["video_only"],
        video=VideoSpec(num_frames=4, size=(8, 8), resize_short=8),
        audio=AudioSpec(),
    )
    assert v.audio is None and v.video.shape == (4, 8, 8, 3)
    with pytest.raises(DecodeError, match="no stream of the requested"):
        decode_clip(unusual_clips["audio_only"], video=VideoSpec(), audio=None)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("empty", "empty file"),
        ("text", "cannot open text.mp4"),
        ("truncated", "cannot open truncated.mp4"),
        ("garbled", "garbled.mp4"),
        ("missing_file", "file not found"),
    ],
)
def test_broken_files_raise_decode_error_with_reason(broken_clips, kind, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_clip(broken_clips[kind], video=VideoSpec(), audio=AudioSpec())
    row, clip, why = decode_row(7, str(broken_clips[kind]), None, "x", VideoSpec(), AudioSpec())
    assert (row, clip) == (7, None) and reason in why


def test_separate_audio_file_and_frame_folder(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    make_clip(tmp_path / "sound.mp4", video=False, seconds=0.5)
    root = tmp_path / "frames"
    for k in range(3):
        (root / f"frame_{k}").mkdir(parents=True)
        pil.fromarray(np.full((20, 30, 3), 8 + 15 * k, np.uint8)).save(
            root / f"frame_{k}" / "vid1.jpg", quality=95
        )
    c = decode_clip(
        root,
        video=VideoSpec(num_frames=3, size=(8, 8), resize_short=8),
        audio=AudioSpec(),
        audio_path=tmp_path / "sound.mp4",
        clip_id="vid1",
    )
    assert [_frame_index(f) for f in c.video] == [0, 1, 2]
    assert 8000 <= c.audio.size <= 8000 + 2048
    with pytest.raises(DecodeError, match="no frames for 'other'"):
        decode_clip(root, video=VideoSpec(), audio=None, clip_id="other")
