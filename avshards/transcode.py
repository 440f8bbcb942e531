"""One source file -> 16 fps JPEG frames + 16 kHz mono PCM, with one ffprobe and one ffmpeg run.

The ffmpeg run decodes the file once and writes two outputs: the frames as a concatenated JPEG
stream on stdout (split later at SOI/EOI markers) and, only when the probe found an audio stream
(ffmpeg fails the whole command when an output maps an absent stream), raw s16le audio to a
temporary file. Everything runs with ``-threads 1`` because the build runs one process per core.

The ffmpeg command line is built with ffmpeg-python's graph API and run by :func:`_run` (a hard
timeout, our own error messages); ffprobe's is written out here, because ``ffmpeg.probe`` runs the
child without a timeout.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import ffmpeg
import numpy as np

from avshards.format import FPS, SAMPLE_RATE, split_jpeg_stream

DEFAULT_SHORT_SIDE = 128
DEFAULT_QUALITY = 5          # ffmpeg -q:v (2 = best, 31 = worst); see docs/format.md for the choice
DEFAULT_TIMEOUT = 600.0      # seconds per source file, probe and transcode each
MIN_VIDEO_SECONDS = 0.5
SILENCE_DB = -60.0           # rms below this (dBFS) counts as a silent track
FLOOR_DB = -120.0            # the level we write for digital silence (json has no -inf)


class TranscodeError(RuntimeError):
    """A source that cannot be turned into clips; the message is the reason, one sentence."""


class MissingFFmpeg(RuntimeError):
    """ffmpeg or ffprobe is not installed."""


@dataclass(frozen=True)
class Probe:
    """What ffprobe says about a file (only what the transcode needs)."""

    duration: float
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    audio_codec: str | None = None
    audio_channels: int = 0


@dataclass
class Decoded:
    """A whole (segment of a) source, decoded: JPEG stream + offsets, PCM or None, and notes."""

    jpeg: bytes
    offsets: list[int]
    pcm: np.ndarray | None
    width: int
    height: int
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.offsets) - 1


def check_ffmpeg() -> str:
    """The ffmpeg version line; raises :class:`MissingFFmpeg` with the fix when it is absent."""
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise MissingFFmpeg(f"{tool} is not installed or not on PATH; install it "
                                "(Debian/Ubuntu: sudo apt-get install ffmpeg) and run again.")
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0] if out else "ffmpeg (unknown version)"


def _last_line(stderr: bytes | str, path: str = "") -> str:
    """ffmpeg's last two distinct error lines, without the file name (the failure names the file)."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if path and line.startswith(path + ": "):
            line = line[len(path) + 2:]
        line = re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\] ", "", line)   # "[mov,mp4 @ 0x55..] " prefixes
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines[-2:])[:300] or "no message"


def _run(cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run with a hard timeout; subprocess.run kills the child when it expires."""
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TranscodeError(f"{what} did not finish within {timeout:g} s and was stopped "
                             "(raise --timeout if the file is just very long)") from None


def probe(path: str, timeout: float = DEFAULT_TIMEOUT) -> Probe:
    """ffprobe ``path``: the command ``ffmpeg.probe`` runs, plus ``-v error`` and a timeout.

    ``ffmpeg.probe`` itself cannot be used: it waits for ffprobe without a time limit, so a hung
    file (a broken network mount) would hang the build.
    """
    if not os.path.exists(path):
        raise TranscodeError(f"file not found: {path}")
    cmd = ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", path]
    res = _run(cmd, timeout, "ffprobe")
    if res.returncode != 0:
        raise TranscodeError(f"not a readable media file ({_last_line(res.stderr, path)})")
    info = json.loads(res.stdout or b"{}")
    streams = info.get("streams", [])
    # Cover art (attached_pic) is a "video" stream in mp3/m4a files; it is not a video.
    video = [s for s in streams if s.get("codec_type") == "video"
             and not s.get("disposition", {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not video and not audio:
        raise TranscodeError("no video or audio stream in the file")
    duration = float(info.get("format", {}).get("duration") or 0.0)
    v = video[0] if video else {}
    a = audio[0] if audio else {}
    return Probe(duration=duration, has_video=bool(video), has_audio=bool(audio),
                 width=int(v.get("width", 0)), height=int(v.get("height", 0)),
                 audio_codec=a.get("codec_name"), audio_channels=int(a.get("channels", 0)))


def scale_filter(short_side: int) -> str:
    """fps=16 then scale so the short side is ``short_side`` and both sides are even.

    The filter runs after ffmpeg's automatic rotation, so iw/ih are the displayed sizes.
    """
    s = short_side
    return (f"fps={FPS},scale='if(lte(iw,ih),{s},-2)':'if(lte(iw,ih),-2,{s})'"
            ":flags=bilinear,format=yuvj420p")


def ffmpeg_command(path: str, audio_out: str | None, *, video: bool = True, start: float | None = None,
                   end: float | None = None, short_side: int = DEFAULT_SHORT_SIDE,
                   quality: int = DEFAULT_QUALITY) -> list[str]:
    """The single ffmpeg command: JPEG frames to stdout, s16le audio to ``audio_out`` (if given)."""
    seek = {}
    # Input-side -ss is frame-exact when transcoding and avoids decoding what is skipped.
    if start:
        seek["ss"] = f"{start:.6f}"
    if end is not None:
        seek["t"] = f"{end - (start or 0.0):.6f}"
    source = ffmpeg.input(path, threads=1, **seek)   # -threads before -i: one decoder thread
    outputs = []
    if video:
        outputs.append(source["v:0"].output("pipe:1", vf=scale_filter(short_side), format="mjpeg", threads=1,
                                            **{"c:v": "mjpeg", "q:v": quality}))
    if audio_out:
        outputs.append(source["a:0"].output(audio_out, ac=1, ar=SAMPLE_RATE, format="s16le",
                                            **{"c:a": "pcm_s16le"}))
    # Global options; ffmpeg-python writes them after the outputs, where ffmpeg reads them the same.
    return (ffmpeg.merge_outputs(*outputs)
            .global_args("-nostdin", "-hide_banner", "-v", "error", "-filter_threads", "1")
            .compile(overwrite_output=True))


def audio_level(pcm: np.ndarray) -> tuple[float, float]:
    """(rms in dBFS, peak in [0, 1]) of int16 samples; digital silence is ``FLOOR_DB``."""
    if len(pcm) == 0:
        return FLOOR_DB, 0.0
    x = pcm.astype(np.float64) / 32768.0
    rms = math.sqrt(float(np.mean(x * x)))
    db = 20 * math.log10(rms) if rms > 0 else FLOOR_DB
    return round(max(db, FLOOR_DB), 2), round(float(np.max(np.abs(x))), 6)


def _decode(path: str, p: Probe, with_audio: bool, timeout: float,
            **kw) -> tuple[bytes, np.ndarray | None, str]:
    """One ffmpeg run; returns (jpeg stream, pcm or None, ffmpeg's complaints). Raises TranscodeError."""
    with tempfile.TemporaryDirectory(prefix="avshards-") as tmp:
        audio_out = os.path.join(tmp, "audio.s16le") if with_audio else None
        res = _run(ffmpeg_command(path, audio_out, video=p.has_video, **kw), timeout, "ffmpeg")
        if res.returncode != 0:
            raise TranscodeError(f"ffmpeg failed ({_last_line(res.stderr, path)})")
        pcm = None
        if audio_out and os.path.exists(audio_out):
            pcm = np.fromfile(audio_out, dtype="<i2")
    return res.stdout, pcm, _last_line(res.stderr, path) if res.stderr.strip() else ""


def transcode(path: str, *, start: float | None = None, end: float | None = None,
              short_side: int = DEFAULT_SHORT_SIDE, quality: int = DEFAULT_QUALITY,
              timeout: float = DEFAULT_TIMEOUT) -> Decoded:
    """Decode ``path`` (its ``[start, end]`` segment when given) to 16 fps JPEGs + 16 kHz mono PCM.

    Raises :class:`TranscodeError` with the reason when the file yields nothing usable.
    An audio track that fails to decode keeps the video (pcm None, the reason in notes).
    """
    if start is not None and end is not None and end <= start:
        raise TranscodeError(f"segment end {end:g} s is not after its start {start:g} s")
    p = probe(path, timeout)
    kw = dict(start=start, end=end, short_side=short_side, quality=quality, timeout=timeout)
    notes: list[str] = []
    try:
        jpeg, pcm, complaint = _decode(path, p, p.has_audio, **kw)
    except TranscodeError as err:
        if not (p.has_audio and p.has_video):
            raise
        # Retry without audio: a broken audio track must not cost us the video.
        jpeg, pcm, complaint = _decode(path, p, False, **kw)
        notes.append(f"audio track failed to decode, kept the video without audio: {err}")
    if p.has_audio and pcm is not None and len(pcm) == 0:
        why = f" ({complaint})" if complaint else ""
        notes.append(f"audio track decoded to no samples{why}; kept the video without audio")
        pcm = None
    if not p.has_audio:
        notes.append("source has no audio stream")
    try:
        offsets = split_jpeg_stream(jpeg)
    except ValueError as err:
        raise TranscodeError(f"ffmpeg produced a broken frame stream ({err})") from None
    n = len(offsets) - 1
    if p.has_video and n < MIN_VIDEO_SECONDS * FPS:
        raise TranscodeError(f"too short: {n / FPS:.2f} s of video, the minimum is {MIN_VIDEO_SECONDS} s")
    if not p.has_video and pcm is None:
        raise TranscodeError("audio-only file decoded to no samples")
    width, height = _jpeg_size(jpeg) if n else (0, 0)
    return Decoded(jpeg, offsets, pcm, width, height, notes)


def _jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from the first SOF marker of a JPEG."""
    pos = 2
    while pos + 9 < len(jpeg):
        if jpeg[pos] != 0xFF:
            pos += 1
            continue
        marker = jpeg[pos + 1]
        length = int.from_bytes(jpeg[pos + 2:pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(jpeg[pos + 7:pos + 9], "big"), int.from_bytes(jpeg[pos + 5:pos + 7], "big")
        pos += 2 + length
    raise TranscodeError("ffmpeg produced a JPEG without a size header")
