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
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".ogv", ".wmv")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus", ".aac")
MEDIA_EXTS = VIDEO_EXTS + AUDIO_EXTS
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


def is_media(name: str) -> bool:
    return name.lower().endswith(MEDIA_EXTS)


def _walk_media(folder: str) -> list[str]:
    """All media files below ``folder`` (sorted, symlinks followed; FIFOs count, ffprobe judges them)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in filenames if is_media(f) and not f.startswith(".")]
    return sorted(found)


def from_folder(folder: str) -> list[SourceItem]:
    """Media files below ``folder``; label = first folder level below it (None for top-level files)."""
    items = []
    for path in _walk_media(folder):
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


def resolve_sources(src: str | os.PathLike, root: str | os.PathLike | None = None) -> list[SourceItem]:
    """The source items of ``src`` (folder, CSV, list file or glob) in a deterministic order.

    Raises :class:`SourceError` with a one-sentence fix when ``src`` is missing or holds nothing.
    """
    src = os.fspath(src)
    if any(ch in src for ch in "*?[") and not os.path.exists(src):
        items = from_glob(src)
    elif os.path.isdir(src):
        items = from_folder(src)
    elif os.path.isfile(src):
        base = os.fspath(root) if root is not None else os.path.dirname(os.path.abspath(src))
        if src.lower().endswith((".csv", ".tsv")):
            items = from_csv(src, base)
        elif is_media(src):
            items = [SourceItem(src, id=os.path.basename(src))]
        else:
            items = from_list(src, base)
    else:
        raise SourceError(f"--src {src} does not exist; give a folder of videos, a CSV, a list file or a glob.")
    if not items:
        raise SourceError(f"--src {src} holds no media files (looked for {', '.join(MEDIA_EXTS[:5])}, ...); "
                          "point it at a folder of videos, a CSV, a list file or a glob.")
    return items
