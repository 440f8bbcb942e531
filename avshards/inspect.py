"""Look at shards: ``inspect`` (a summary table and :func:`order_report`, how clustered the clip
order is), ``verify`` (decode everything, check the json against the content) and ``preview`` (a
contact sheet of frames and a log-mel image per clip).

All read through :mod:`avshards.reader`, so they work wherever the reader does; on a remote set
``summarize`` and ``order_report`` read only the manifest, the indexes and a few json members.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import os
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from avshards import remote
from avshards.format import MANIFEST_NAME, SAMPLE_RATE, WAV_HEADER_BYTES, AVClip
from avshards.index import index_path, parse_index, scan_tar
from avshards.reader import is_pattern, list_shards, load_index, open_shards, read_manifest, read_samples, shard_urls
from avshards.transcode import SILENCE_DB

REMOTE_READERS = 16     # concurrent requests when a remote set is inspected (sizes, json members)


@dataclass
class Summary:
    """Totals of a shard set. ``complete`` is False for a remote set without a build manifest: its
    clips and sizes are known (indexes, the store), its hours, labels and audio share are not."""

    shards: int = 0
    clips: int = 0
    seconds: float = 0.0
    num_bytes: int = 0
    with_audio: int = 0
    labels: Counter = field(default_factory=Counter)
    complete: bool = True

    @property
    def bytes_per_clip_second(self) -> float:
        return self.num_bytes / self.seconds if self.seconds else 0.0

    def table(self) -> str:
        """A two-line table plus the most common labels."""
        known = self.complete
        share = f"{100 * self.with_audio / self.clips:.0f}%" if self.clips and known else "-"
        cols = [("shards", str(self.shards)), ("clips", str(self.clips)),
                ("hours", f"{self.seconds / 3600:.3f}" if known else "?"),
                ("labels", str(len(self.labels)) if known else "?"),
                ("has_audio", share if known else "?"), ("size", _human(self.num_bytes)),
                ("bytes/clip-s", _human(self.bytes_per_clip_second) if known else "?")]
        widths = [max(len(a), len(b)) for a, b in cols]
        lines = ["  ".join(a.ljust(w) for (a, _), w in zip(cols, widths)),
                 "  ".join(b.ljust(w) for (_, b), w in zip(cols, widths))]
        if self.labels:
            top = ", ".join(f"{k} ({v})" for k, v in self.labels.most_common(8))
            more = f", ... {len(self.labels) - 8} more" if len(self.labels) > 8 else ""
            lines.append(f"labels: {top}{more}")
        if not known:
            lines.append("hours, labels and audio share come from the manifest.json of `avshards build`, which this "
                         "set lacks; inspect a local copy to count them from every clip")
        return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} TB"


def _clip_seconds(clip: AVClip) -> float:
    return clip.duration if clip.num_frames else clip.num_samples / clip.sample_rate


def _build_manifest(url: str) -> dict | None:
    """The manifest of a folder / prefix URL (None for a brace pattern or without one)."""
    return None if is_pattern(url) else read_manifest(url)


def summarize(url: str) -> Summary:
    """Totals of the shards at ``url`` (a folder, pattern or URL).

    From the manifest of `avshards build` when there is one; else clip counts from the indexes and
    sizes from the store (remote: no shard is read), or every clip's json (local).
    """
    m = _build_manifest(url)
    if m is not None and "label_counts" in m:
        return Summary(len(m["shards"]), m["num_samples"], m["seconds"], m["num_bytes"], m["num_with_audio"],
                       Counter({k or "(none)": v for k, v in m["label_counts"].items()}))
    if remote.scheme_of(url) != "file":
        shards = list_shards(url)
        with cf.ThreadPoolExecutor(REMOTE_READERS) as pool:
            sizes = list(pool.map(lambda s: remote.size(s.url) or 0, shards))
        return Summary(len(shards), sum(s.num_samples for s in shards), num_bytes=sum(sizes), complete=False)
    s = Summary()
    urls = shard_urls(url)
    s.shards = len(urls)
    for shard in urls:
        s.num_bytes += remote.size(shard) or 0
        for clip in open_shards(shard):
            s.clips += 1
            s.seconds += _clip_seconds(clip)
            s.with_audio += clip.has_audio
            s.labels[clip.label if clip.label is not None else "(none)"] += 1
    return s


# order -----------------------------------------------------------------------------------------
SORTED_AT = 0.5    # clustering from which a set counts as sorted: half way from random to sorted


@dataclass(frozen=True)
class OrderReport:
    """How clustered the clip order of a shard set is, from neighbouring clips inside its shards.

    ``same_*`` is the share of neighbouring clips with the same label / source; ``random_*`` what a
    random order gives (labels: the manifest's counts when it has them, else the clips looked at).
    ``*_clustering`` rescales it: 0 is a random order, 1 every neighbour alike.
    """

    url: str
    clips: int                      # clips looked at
    shards: int                     # shards they come from
    pairs: int                      # neighbouring pairs among them
    same_label: float | None        # None when the clips have no labels (or only one)
    random_label: float | None
    same_source: float
    random_source: float

    @property
    def label_clustering(self) -> float | None:
        return None if self.same_label is None else _clustering(self.same_label, self.random_label)

    @property
    def source_clustering(self) -> float:
        return _clustering(self.same_source, self.random_source)

    @property
    def sorted_by_label(self) -> bool:
        """True when batches drawn from this order would hold far fewer classes than a shuffle's."""
        return self.label_clustering is not None and self.label_clustering >= SORTED_AT

    @property
    def advice(self) -> str | None:
        """The one warning to show (``None`` when the order is fine)."""
        if not self.sorted_by_label:
            return None
        return (f"{self.url}: the clips are sorted by label ({self.same_label:.0%} of neighbouring clips share a "
                f"label, a random order gives {self.random_label:.0%}), so a batch holds few classes; rebuild the "
                "set with avshards build --shuffle (the default), or shuffle the rows of your CSV.")

    def summary(self) -> str:
        """One line: both shares against a random order's, and what they were measured on."""
        if self.pairs == 0:
            return f"order: too few clips to judge ({self.clips} in {self.shards} shard(s))"
        if self.same_label is None:
            head = "order: no labels to judge by"
        else:
            head = (f"order: {'sorted by label' if self.sorted_by_label else 'mixed'}: {self.same_label:.0%} of "
                    f"neighbouring clips share a label (random order: {self.random_label:.0%})")
        return (f"{head}; {self.same_source:.0%} share a source (random order: {self.random_source:.0%}); "
                f"from {self.clips} clips in {self.shards} shard(s)")


def _clustering(same: float, random: float) -> float:
    return 0.0 if random >= 1 else max(0.0, (same - random) / (1 - random))


def _same_share(counts: Counter) -> float:
    """Chance that two different clips drawn at random share a value, given its counts."""
    n = sum(counts.values())
    return sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)) if n > 1 else 0.0


def _neighbour_share(runs: Sequence[list], n_pairs: int) -> float:
    return sum(a == b for run in runs for a, b in zip(run, run[1:])) / n_pairs if n_pairs else 0.0


def _clip_origins(shard: str, clips: int) -> list[tuple[str | None, str | None]]:
    """(label, source) of the first ``clips`` clips of a shard: only their json members when the
    shard has an index (one small ranged read each, concurrently), else streamed from the start."""
    index = load_index(shard)
    if index is None:
        metas = [json.loads(s["json"]) for s in read_samples(shard, 0, clips)]
    else:
        spans = [s.members["json"] for s in index[:clips] if "json" in s.members]
        with cf.ThreadPoolExecutor(REMOTE_READERS) as pool:
            metas = list(pool.map(lambda span: json.loads(remote.read_range(shard, span[0], span[0] + span[1])),
                                  spans))
    return [(m.get("label"), m.get("source_id") or m.get("source")) for m in metas]


def order_report(url: str, max_shards: int = 4, clips_per_shard: int = 64) -> OrderReport:
    """How clustered the order of the shards at ``url`` is, from the first ``clips_per_shard`` clips
    of up to ``max_shards`` shards spread over the set (a bounded cost on any store).

    A set built in (label, path) order gives a high ``label_clustering`` (:attr:`OrderReport.advice`
    says to rebuild it); clips cut from one long source sit side by side whatever the build order
    (``source_clustering``), which the stream's shuffle buffer has to mix.
    """
    urls = shard_urls(url)
    k = min(len(urls), max_shards)
    picked = [urls[round(i * (len(urls) - 1) / (k - 1))] for i in range(k)] if k > 1 else urls[:k]
    origins = [_clip_origins(u, clips_per_shard) for u in picked]
    pairs = sum(max(0, len(o) - 1) for o in origins)
    labels = [[lab for lab, _ in o] for o in origins]
    sources = [[src for _, src in o] for o in origins]
    seen_labels = Counter(lab for run in labels for lab in run)
    same_label = random_label = None
    if len(seen_labels) > 1:            # clips without a label count as one more value
        m = _build_manifest(url)
        counts = Counter(m["label_counts"]) if m and m.get("label_counts") else seen_labels
        same_label, random_label = _neighbour_share(labels, pairs), _same_share(counts)
    return OrderReport(url, sum(map(len, origins)), len(picked), pairs, same_label, random_label,
                       _neighbour_share(sources, pairs), _same_share(Counter(s for run in sources for s in run)))


# verify ----------------------------------------------------------------------------------------
def check_clip(clip: AVClip) -> list[str]:
    """Problems of one clip: every frame decoded, every size and count compared with its json."""
    from PIL import Image

    m, problems = clip.meta, []
    offsets = m["frame_offsets"]
    mjpeg = clip._mjpeg   # the raw member: verify checks bytes the public API slices
    if len(offsets) != clip.num_frames + 1 or offsets[0] != 0 or offsets[-1] != len(mjpeg):
        problems.append(f"frame offsets do not match the {len(mjpeg)}-byte mjpeg member")
        return problems
    if any(b <= a for a, b in zip(offsets, offsets[1:])):
        return problems + ["frame offsets are not increasing"]
    wrong_size: list[int] = []
    for i, data in enumerate(clip.jpeg(range(clip.num_frames))):
        if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
            problems.append(f"frame {i} is not one whole JPEG")
            continue
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception as err:  # PIL raises many types for broken data
            problems.append(f"frame {i} does not decode ({err})")
            continue
        if img.size != (m.get("width"), m.get("height")):
            wrong_size.append(i)
    if wrong_size:   # one line, not one per frame
        w, h = Image.open(io.BytesIO(clip.jpeg([wrong_size[0]])[0])).size
        problems.append(f"{len(wrong_size)} frame(s) from frame {wrong_size[0]} are {w}x{h}, "
                        f"json says {m.get('width')}x{m.get('height')}")
    problems += _check_wav(clip)
    return problems


def _check_wav(clip: AVClip) -> list[str]:
    wav = clip._wav
    if wav is None:
        return ["has_audio is true but there is no wav member"] if clip.has_audio else []
    if not clip.has_audio:
        return ["a wav member is present but has_audio is false"]
    if len(wav) < WAV_HEADER_BYTES:
        return ["wav member is shorter than its header"]
    riff, _, wave, _, _, fmt, channels, rate, _, _, bits, data, size = struct.unpack("<4sI4s4sIHHIIHH4sI", wav[:44])
    problems = []
    if (riff, wave, data, fmt, channels, bits) != (b"RIFF", b"WAVE", b"data", 1, 1, 16):
        problems.append("wav header is not 16-bit mono PCM with a 44-byte header")
    if rate != clip.sample_rate or rate != SAMPLE_RATE:
        problems.append(f"wav is {rate} Hz, json says {clip.sample_rate}")
    if size != 2 * clip.num_samples or len(wav) != WAV_HEADER_BYTES + size:
        problems.append(f"wav holds {(len(wav) - WAV_HEADER_BYTES) // 2} samples, json says {clip.num_samples}")
    return problems


def verify(url: str) -> Iterator[tuple[str, str]]:
    """Yield ``(where, problem)`` for everything wrong in the shards at ``url`` (nothing = all good)."""
    urls = shard_urls(url)
    if not urls:
        yield url, "no shards found"
    for shard in urls:
        count = 0
        try:
            for clip in open_shards(shard):
                count += 1
                for problem in check_clip(clip):
                    yield f"{os.path.basename(shard)}:{clip.key}", problem
        except Exception as err:  # a broken tar or json: report it and go on with the next shard
            yield os.path.basename(shard), f"cannot be read to the end ({type(err).__name__}: {err})"
            continue
        yield from _check_index(shard, count)
    yield from _check_manifest(url, urls)


def _check_index(shard: str, count: int) -> Iterator[tuple[str, str]]:
    idx = index_path(shard)
    if not os.path.exists(shard) or not os.path.exists(idx):
        return
    with open(idx) as f:
        listed = parse_index(f.read())
    if listed != scan_tar(shard):
        yield os.path.basename(idx), f"does not match its shard ({len(listed)} indexed, {count} read)"


def _check_manifest(url: str, urls: list[str]) -> Iterator[tuple[str, str]]:
    path = os.path.join(url, MANIFEST_NAME)
    if not os.path.isdir(url) or not os.path.exists(path):
        return
    with open(path) as f:
        manifest = json.load(f)
    for entry in manifest.get("shards", []):
        shard = os.path.join(url, entry["name"])
        if not os.path.exists(shard):
            yield MANIFEST_NAME, f"lists {entry['name']}, which is missing"
            continue
        real = sum(1 for _ in open_shards(shard))
        if real != entry["num_samples"]:
            yield MANIFEST_NAME, f"says {entry['name']} has {entry['num_samples']} clips, it has {real}"
        if "num_bytes" in entry and entry["num_bytes"] != os.path.getsize(shard):
            yield MANIFEST_NAME, f"size of {entry['name']} differs from the file"


# preview ---------------------------------------------------------------------------------------
def mel_filterbank(n_fft: int = 400, n_mels: int = 64, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular HTK-mel filters, shape (n_mels, n_fft // 2 + 1)."""
    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    def hz(m):
        return 700 * (10 ** (m / 2595) - 1)

    points = hz(np.linspace(mel(0), mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = points[:-2, None], points[1:-1, None], points[2:, None]
    return np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)


def log_mel(wave: np.ndarray, n_fft: int = 400, hop: int = 160, n_mels: int = 64) -> np.ndarray:
    """Log-mel spectrogram (n_mels, frames) in dB of a float waveform (for pictures, not training)."""
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return 10 * np.log10(mel_filterbank(n_fft, n_mels) @ power.T + 1e-10)


def preview(url: str, out: str, clips: int = 4, frames: int = 6) -> str:
    """Write a contact sheet PNG: per clip a row of ``frames`` frames and its log-mel image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = []
    for clip in open_shards(url):
        chosen.append(clip)
        if len(chosen) == clips:
            break
    if not chosen:
        raise remote.ShardAccessError(f"no clips found at {url}; point preview at a shard folder or file.")
    fig, axes = plt.subplots(len(chosen), frames + 1, squeeze=False,
                             figsize=(1.6 * frames + 3.2, 1.4 * len(chosen)),
                             gridspec_kw={"width_ratios": [1] * frames + [2]})
    for row, clip in zip(axes, chosen):
        idx = np.linspace(0, max(clip.num_frames - 1, 0), frames).round().astype(int) if clip.num_frames else []
        images = clip.frames(list(idx)) if clip.num_frames else []
        for ax, img in zip(row[:frames], list(images) + [None] * frames):
            if img is not None:
                ax.imshow(img)
            ax.axis("off")
        row[0].set_title(f"{clip.key}  {clip.label or ''}", fontsize=7, loc="left")
        ax = row[frames]
        if clip.has_audio and clip.num_samples:
            ax.imshow(log_mel(clip.audio()), origin="lower", aspect="auto", cmap="magma")
            silent = " (silent)" if clip.meta.get("audio_rms_db", 0) < SILENCE_DB else ""
            ax.set_title(f"log-mel, {clip.num_samples / clip.sample_rate:.1f} s{silent}", fontsize=7)
        else:
            ax.text(0.5, 0.5, "no audio", ha="center", va="center", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
