"""Turn what the user points at into a deterministic list of :class:`SourceItem`.

Accepted inputs (``src``):

- a folder: media files below it; with class folders (Kinetics / UCF101 / HMDB51 / ESC-50 layout)
  the label is the first folder level under ``src``; files directly in it have no label;
- a Kinetics annotation CSV (``label,youtube_id,time_start,time_end,split``): files are found by
  id below ``root`` (named ``{id}_{start:06d}_{end:06d}.mp4`` by the usual downloaders, already
  cut to the segment, or ``{id}.mp4``, the whole video, which we cut);
- a generic CSV ``path,label[,start,end[,split]]`` (header optional);
- a list file, one path per line (``#`` comments);
- a glob pattern (``videos/**/*.mp4``).

Relative paths in CSV and list files resolve against ``root`` (default: the file's folder).

In a folder, every file is accounted for: one with a media extension, or with an extension we do
not know (ffprobe then decides, and the build lists it in failures.jsonl when it is not media), is a
source; the others (text, images, archives, subtitles, hidden files) are counted by extension in
:attr:`SourceScan.skipped`, which the build summary prints.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

# Containers ffmpeg reads (`ffmpeg -demuxers`), by their usual extensions.
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".ogv", ".wmv",
              ".3g2", ".asf", ".divx", ".dv", ".f4v", ".m2ts", ".m2v", ".mj2", ".mts", ".mxf", ".nut", ".ogm",
              ".qt", ".rm", ".rmvb", ".ts", ".vob", ".y4m")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus", ".aac", ".aif", ".aiff", ".aifc", ".wma", ".mka",
              ".ac3", ".amr", ".ape", ".au", ".caf", ".dts", ".m4b", ".mp2", ".oga", ".snd", ".spx", ".tta",
              ".w64", ".wv")
MEDIA_EXTS = VIDEO_EXTS + AUDIO_EXTS
# What sits beside media in dataset folders and is not media: skipped, and counted by extension.
NOT_MEDIA_EXTS = (".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".xml", ".html", ".htm", ".yaml",
                  ".yml", ".ini", ".cfg", ".log", ".nfo", ".pdf", ".doc", ".docx", ".py", ".sh", ".m",
                  ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".svg",
                  ".srt", ".vtt", ".ass", ".ssa", ".sub", ".lrc", ".description",
                  ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".idx", ".npy", ".npz", ".pkl",
                  ".part", ".ytdl", ".torrent", ".md5", ".sha1", ".sha256")
HIDDEN = "(hidden)"
KINDS = {"glob": "a glob pattern (label = each file's folder)",
         "folder": "a folder (label = first folder level below it)",
         "csv": "a CSV (Kinetics annotations, or path,label[,start,end[,split]])",
         "list": "a list file (one path per line)",
         "media": "one media file",
         "items": "a list of SourceItem"}

log = logging.getLogger("avshards.sources")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


class SourceError(ValueError):
    """The ``--src`` the user gave cannot be read; the message says why and what to do."""


@dataclass(frozen=True)
class SourceItem:
    """One source file (or a segment of it, in seconds) with its label and split when known."""

    path: str
    label: str | None = None
    split: str | None = None
    start: float | None = None
    end: float | None = None
    id: str | None = None


@dataclass
class SourceScan:
    """What ``--src`` gave: the sources in order, how it was read, and the files not taken."""

    items: list[SourceItem]
    kind: str                                              # a key of KINDS
    skipped: Counter = field(default_factory=Counter)      # extension (or "(hidden)") -> files

    def skipped_text(self) -> str:
        return skipped_text(self.skipped)


def skipped_text(skipped: dict[str, int]) -> str:
    """``"3 file(s) by extension (.txt 2, .json 1)"``, or "" when nothing was skipped."""
    if not skipped:
        return ""
    by_ext = ", ".join(f"{ext} {n}" for ext, n in sorted(skipped.items(), key=lambda e: (-e[1], e[0])))
    return f"{sum(skipped.values())} file(s) by extension ({by_ext})"


def is_media(name: str) -> bool:
    """A known media extension (ffmpeg reads it)."""
    return name.lower().endswith(MEDIA_EXTS)


def extension(name: str) -> str:
    """``".aiff"`` for ``"Kick.AIFF"``; ``"(hidden)"`` for dot files; ``"(none)"`` without one."""
    if os.path.basename(name).startswith("."):
        return HIDDEN
    return os.path.splitext(name)[1].lower() or "(none)"


def _walk(folder: str) -> tuple[list[str], Counter]:
    """Source candidates below ``folder`` (sorted, symlinks followed; FIFOs count, ffprobe judges
    them) and the files left out, counted by extension. Hidden folders are not entered."""
    found, skipped = [], Counter()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        skipped[HIDDEN] += sum(d.startswith(".") for d in dirnames)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            ext = extension(name)
            if ext == HIDDEN or ext in NOT_MEDIA_EXTS:
                skipped[ext] += 1
            else:
                found.append(os.path.join(dirpath, name))
    return sorted(found), +skipped


def _walk_media(folder: str) -> list[str]:
    """The files below ``folder`` with a known media extension (sorted)."""
    return [p for p in _walk(folder)[0] if is_media(p)]


def from_folder(folder: str) -> list[SourceItem]:
    """Source files below ``folder``; label = first folder level below it (None for top-level files)."""
    return _from_walk(folder, _walk(folder)[0])


def _from_walk(folder: str, paths: list[str]) -> list[SourceItem]:
    items = []
    for path in paths:
        rel = os.path.relpath(path, folder).split(os.sep)
        label = rel[0] if len(rel) > 1 else None
        items.append(SourceItem(path, label=label, id=os.path.relpath(path, folder)))
    # Sorted by (label, relative path): stable across machines and file-system listing orders.
    return sorted(items, key=lambda s: (s.label or "", s.id))


def from_glob(pattern: str) -> list[SourceItem]:
    """Files matching ``pattern`` (``**`` recurses), sorted; label = the parent folder's name."""
    paths = sorted(p for p in glob.glob(pattern, recursive=True) if not os.path.isdir(p))
    return [SourceItem(p, label=os.path.basename(os.path.dirname(p)) or None, id=p) for p in paths]


def from_list(path: str, root: str) -> list[SourceItem]:
    """One path per line; blank lines and ``#`` comments skipped; order kept."""
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                items.append(SourceItem(os.path.join(root, line), id=line))
    return items


def _float(value: str | None) -> float | None:
    value = (value or "").strip()
    return float(value) if value else None


def _read_csv(path: str) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f) if row and any(c.strip() for c in row)]


def from_csv(path: str, root: str) -> list[SourceItem]:
    """A Kinetics annotation CSV or a generic ``path,label[,start,end[,split]]`` CSV; order kept."""
    rows = _read_csv(path)
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    if all(c in header for c in KINETICS_COLUMNS):
        return _kinetics(rows[1:], header, root)
    if header and header[0] == "path":
        cols, body = header, rows[1:]
    else:
        cols, body = ["path", "label", "start", "end", "split"], rows
    items = []
    for n, row in enumerate(body, 2 if body is not rows else 1):
        rec = dict(zip(cols, (c.strip() for c in row)))
        try:
            start, end = _float(rec.get("start")), _float(rec.get("end"))
        except ValueError:
            raise SourceError(f"{path} line {n}: start/end must be seconds, got {row}; "
                              "fix the CSV (columns path,label[,start,end])") from None
        items.append(SourceItem(os.path.join(root, rec["path"]), rec.get("label") or None,
                                rec.get("split") or None, start, end, rec["path"]))
    return items


def _kinetics(body: list[list[str]], header: list[str], root: str) -> list[SourceItem]:
    """Map Kinetics rows to files, searching ``root`` recursively once."""
    by_stem: dict[str, str] = {}
    for p in _walk_media(root):
        by_stem.setdefault(os.path.splitext(os.path.basename(p))[0], p)
    items = []
    for row in body:
        rec = dict(zip(header, (c.strip() for c in row)))
        yid, label, split = rec["youtube_id"], rec["label"], rec.get("split") or None
        try:
            start, end = float(rec["time_start"]), float(rec["time_end"])
        except ValueError:
            raise SourceError(f"Kinetics row {row} has a non-numeric time_start/time_end; fix the CSV.") from None
        cut = f"{yid}_{int(start):06d}_{int(end):06d}"
        if cut in by_stem:       # the downloader already cut the segment: take the whole file
            items.append(SourceItem(by_stem[cut], label, split, None, None, yid))
        else:                    # the full video (or missing: the build reports "file not found")
            path = by_stem.get(yid, os.path.join(root, label, yid + ".mp4"))
            items.append(SourceItem(path, label, split, start, end, yid))
    return items


def source_kind(src: str | os.PathLike) -> str:
    """How ``src`` is read: a key of :data:`KINDS`; :class:`SourceError` when it does not exist."""
    src = os.fspath(src)
    if any(ch in src for ch in "*?[") and not os.path.exists(src):
        return "glob"
    if os.path.isdir(src):
        return "folder"
    if not os.path.exists(src):
        raise SourceError(f"--src {src} does not exist; give a folder of videos, a CSV, a list file or a glob.")
    if src.lower().endswith((".csv", ".tsv")):
        return "csv"
    if is_media(src) or not _is_text(src):
        return "media"     # a binary file with an unknown extension: ffprobe decides
    return "list"


def describe_source(src: str | os.PathLike) -> str:
    """``"a list file (one path per line)"``: what the user is told ``src`` was read as."""
    return KINDS[source_kind(src)]


def _is_text(path: str) -> bool:
    """Whether the file's start is UTF-8 text without NUL bytes (a list file, not media)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:     # not just a character cut at the 4096-byte boundary
            return False
    return b"\0" not in head


def _check_list(path: str, items: list[SourceItem]) -> None:
    """A list file whose lines mostly name no media file is not a list of media: say so now."""
    unusable = [i for i in items if not os.path.exists(i.path) or extension(i.path) in NOT_MEDIA_EXTS]
    if len(unusable) > len(items) / 2:
        raise SourceError(f"--src {path} was read as a list file (one path per line), but {len(unusable)} of "
                          f"its {len(items)} lines name no existing media file (first: {unusable[0].id!r}); give a "
                          "folder of videos, a CSV or a list of paths (relative to --root, default the list's folder).")


def scan_sources(src: str | os.PathLike, root: str | os.PathLike | None = None) -> SourceScan:
    """The source items of ``src`` (folder, CSV, list file, glob or one file) in a deterministic
    order, how ``src`` was read, and (for a folder) the files skipped by extension.

    Raises :class:`SourceError` with a one-sentence fix when ``src`` is missing or holds nothing.
    """
    src = os.fspath(src)
    kind, skipped = source_kind(src), Counter()
    base = os.fspath(root) if root is not None else os.path.dirname(os.path.abspath(src))
    if kind == "glob":
        items = from_glob(src)
    elif kind == "folder":
        paths, skipped = _walk(src)
        items = _from_walk(src, paths)
    elif kind == "csv":
        items = from_csv(src, base)
    elif kind == "media":
        items = [SourceItem(src, id=os.path.basename(src))]
    else:
        items = from_list(src, base)
        _check_list(src, items)
    scan = SourceScan(items, kind, skipped)
    skipped_note = f"; skipped {scan.skipped_text()}" if skipped else ""
    log.info("--src %s: read as %s: %d source(s)%s", src, KINDS[kind], len(items), skipped_note)
    if not items:
        looked = f"looked for {', '.join(MEDIA_EXTS[:5])}, ...{skipped_note}"
        raise SourceError(f"--src {src} holds no media files ({looked}); "
                          "point it at a folder of videos, a CSV, a list file or a glob.")
    return scan


def resolve_sources(src: str | os.PathLike, root: str | os.PathLike | None = None) -> list[SourceItem]:
    """The source items of ``src`` (folder, CSV, list file or glob) in a deterministic order
    (:func:`scan_sources` without the account of what was skipped)."""
    return scan_sources(src, root).items
