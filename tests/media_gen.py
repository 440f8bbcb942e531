"""Edge-case media made with ffmpeg for the build tests (known durations, sizes and streams)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def video(path: Path, seconds: float = 2.0, size: str = "160x120", rate: int = 25,
          audio: str | None = "sine", channels: int = 2, extra: tuple[str, ...] = ()) -> Path:
    """A test-pattern video; ``audio`` is "sine", "silent" or None (no audio stream)."""
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        src = "sine=frequency=440:sample_rate=44100" if audio == "sine" else "anullsrc=r=44100"
        args += ["-f", "lavfi", "-i", f"{src}:duration={seconds}" if audio == "sine" else src,
                 "-t", str(seconds), "-ac", str(channels), "-c:a", "aac"]
    ffmpeg(*args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def rotated(path: Path, seconds: float = 1.0) -> Path:
    """A 160x120 video whose container says "rotate 90 degrees" (as phones write it)."""
    plain = video(path.with_name("plain_" + path.name), seconds, audio=None)
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(path))
    plain.unlink()
    return path


def variable_rate(path: Path) -> Path:
    """2 s of video: 30 fps for the first second, then 10 fps (variable frame rate, mkv timestamps)."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=30:duration=2",
           "-vf", r"select='lt(n\,30)+not(mod(n\,3))'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return path


def truncated(path: Path) -> Path:
    """The first half of an mp4 whose index (moov atom) is at the end: unreadable, like a cut download."""
    full = video(path.with_name("full_" + path.name), 2.0)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()
    return path


def not_video(path: Path) -> Path:
    """A text file with a video extension."""
    path.write_text("this is not a video\n" * 50)
    return path


def tone(path: Path, seconds: float = 1.5, rate: int = 44100) -> Path:
    """An audio-only file (format from the extension)."""
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=330:sample_rate={rate}:duration={seconds}", str(path))
    return path


def hanging(path: Path) -> Path:
    """A FIFO named like a video: opening it blocks until someone writes, so ffprobe hangs."""
    os.mkfifo(path)
    return path


def broken_audio(path: Path) -> Path:
    """A video whose AAC packets are scrambled (bitstream noise): the audio cannot be decoded."""
    good = video(path.with_name("good_" + path.stem + ".mp4"), 2.0)
    ffmpeg("-i", str(good), "-c", "copy", "-bsf:a", "noise=amount=2", str(path))
    good.unlink()
    return path
