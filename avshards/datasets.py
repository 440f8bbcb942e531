"""Downstream dataset adapters: a dataset folder in its own published layout -> list of SourceItem.

Each adapter reads the labels and the train / test assignment from the dataset's own files, for
one split or fold (a build option: ``avshards build --dataset ucf101 --split 2``). The items carry
``split`` = "train" or "test", which ends up in every clip's json, so one shard folder holds one
complete evaluation split. Videos a split marks as unused (HMDB51's 0) are left out.

=================  =======================================================  ============
dataset            layout read                                              split option
=================  =======================================================  ============
ucf101             UCF-101/CLASS/*.avi + ucfTrainTestlist/{train,test}list0N  1-3
hmdb51             CLASS/*.avi + testTrainMulti_7030_splits/*_test_splitN.txt   1-3
esc50              audio/*.wav + meta/esc50.csv (fold column)                 test fold 1-5
dcase2014          [train|test/]CLASS/*.wav                                   test fold 1-5 (*)
kinetics-sound     [train|val/]CLASS/*.mp4, or an annotation CSV (the path)   (none)
=================  =======================================================  ============

(*) without train/test folders, every 5th file of each class (sorted by name) is the test fold.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path

from avshards.sources import AUDIO_EXTS, VIDEO_EXTS, SourceItem

TRAIN_NAMES = ("train", "training", "development")
TEST_NAMES = ("test", "testing", "val", "valid", "validate", "validation", "evaluation")

class DatasetError(ValueError):
    """A dataset folder that does not look like the layout its adapter reads."""

def _safe_id(*parts: str) -> str:
    """A sample id usable as a webdataset key: no dots, no path separators."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", "-".join(parts)).strip("_")

def _require(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} not found at {path}; {fix}")
    return path

def _check_split(split: int, allowed: range, dataset: str) -> None:
    if split not in allowed:
        raise DatasetError(f"{dataset} has splits/folds {allowed.start}-{allowed.stop - 1}, not {split}; "
                           f"pass --split with one of them")

def _existing(items: list[SourceItem], dataset: str, root: Path) -> list[SourceItem]:
    """Fail with one sentence when files named by the split lists are missing from disk."""
    missing = [it.path for it in items if not os.path.exists(it.path)]
    if missing:
        raise DatasetError(f"{len(missing)} {dataset} files named in its split lists are missing under "
                           f"{root} (first: {missing[0]}); point the build at the extracted dataset folder")
    return items

def _stem_item(path: Path, label: str, split: str, dataset: str) -> SourceItem:
    return SourceItem(path=str(path), label=label, split=split, start=None, end=None,
                      id=_safe_id(dataset, path.stem))

# --- UCF101 ---------------------------------------------------------------------------------------
def ucf101(root: str | os.PathLike, split: int = 1) -> list[SourceItem]:
    """UCF101 split ``split`` (1-3) from ``trainlist0N.txt`` / ``testlist0N.txt``.

    ``root`` holds the class folders (or a ``UCF-101`` folder of them) and ``ucfTrainTestlist/``
    (beside the class folders or one level up). Labels are the class folder names of classInd.txt.
    """
    _check_split(split, range(1, 4), "UCF101")
    root = Path(root)
    videos = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    lists = next((d for d in (root / "ucfTrainTestlist", root.parent / "ucfTrainTestlist") if d.is_dir()),
                 None)
    if lists is None:
        raise DatasetError(f"no ucfTrainTestlist folder in {root} or beside it; extract "
                           "UCF101TrainTestSplits-RecognitionTask.zip there")
    classes = [line.split()[1] for line in _lines(_require(lists / "classInd.txt", "UCF101 classInd.txt",
                                                          "it comes with ucfTrainTestlist"))]
    items = []
    for part in ("train", "test"):
        listing = _require(lists / f"{part}list0{split}.txt", f"UCF101 {part}list0{split}.txt",
                           "it comes with ucfTrainTestlist")
        for line in _lines(listing):
            rel = line.split()[0]
            label = rel.split("/")[0]
            if label not in classes:
                raise DatasetError(f"{listing} names class {label!r}, which classInd.txt lacks")
            items.append(_stem_item(videos / rel, label, part, "ucf101"))
    return _existing(items, "UCF101", videos)

# --- HMDB51 ---------------------------------------------------------------------------------------
HMDB_SPLIT_CODES = {"1": "train", "2": "test"}      # "0": not used in this split

def hmdb51(root: str | os.PathLike, split: int = 1) -> list[SourceItem]:
    """HMDB51 split ``split`` (1-3) from ``testTrainMulti_7030_splits/CLASS_test_splitN.txt``.

    In those files 1 = train, 2 = test, 0 = unused (left out). Videos are ``root/CLASS/NAME.avi``.
    """
    _check_split(split, range(1, 4), "HMDB51")
    root = Path(root)
    splits = next((d for d in (root / "testTrainMulti_7030_splits", root.parent / "testTrainMulti_7030_splits")
                   if d.is_dir()), None)
    if splits is None:
        raise DatasetError(f"no testTrainMulti_7030_splits folder in {root} or beside it; extract "
                           "test_train_splits.rar there")
    files = sorted(splits.glob(f"*_test_split{split}.txt"))
    if not files:
        raise DatasetError(f"{splits} has no *_test_split{split}.txt files; is it the HMDB51 split folder?")
    items = []
    for listing in files:
        label = listing.name[: -len(f"_test_split{split}.txt")]
        for line in _lines(listing):
            name, code = line.split()[:2]
            if code in HMDB_SPLIT_CODES:
                items.append(_stem_item(root / label / name, label, HMDB_SPLIT_CODES[code], "hmdb51"))
    return _existing(items, "HMDB51", root)

# --- ESC-50 ---------------------------------------------------------------------------------------
def esc50(root: str | os.PathLike, split: int = 1) -> list[SourceItem]:
    """ESC-50 with fold ``split`` (1-5) as the test set and the other four folds as training.

    Reads ``meta/esc50.csv`` (filename, fold, target, category, ...); audio is ``audio/FILENAME``.
    """
    _check_split(split, range(1, 6), "ESC-50")
    root = Path(root)
    meta = _require(root / "meta" / "esc50.csv", "ESC-50 meta/esc50.csv",
                    "point the build at the ESC-50 folder (the one with audio/ and meta/)")
    with open(meta, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"filename", "fold", "category"} <= set(rows[0]):
        raise DatasetError(f"{meta} lacks the filename/fold/category columns of ESC-50's metadata")
    items = [_stem_item(root / "audio" / r["filename"], r["category"],
                        "test" if int(r["fold"]) == split else "train", "esc50") for r in rows]
    return _existing(items, "ESC-50", root)

# --- DCASE2014 ------------------------------------------------------------------------------------
def dcase2014(root: str | os.PathLike, split: int = 1) -> list[SourceItem]:
    """DCASE2014 scene classification: one folder per class.

    With ``train/`` and ``test/`` folders (or development / evaluation) those are the splits.
    Without them, fold ``split`` (1-5) of each class - every 5th file by name - is the test set.
    """
    _check_split(split, range(1, 6), "DCASE2014")
    root = Path(root)
    parts = {p: d for d in _subdirs(root) for p in ("train", "test")
             if d.name.lower() in (TRAIN_NAMES if p == "train" else TEST_NAMES)}
    items = []
    if parts:
        for part, folder in sorted(parts.items()):
            for label, files in _class_files(folder, AUDIO_EXTS):
                items += [_stem_item(f, label, part, "dcase2014") for f in files]
    else:
        for label, files in _class_files(root, AUDIO_EXTS):
            items += [_stem_item(f, label, "test" if i % 5 == split - 1 else "train", "dcase2014")
                      for i, f in enumerate(files)]
    if not items:
        raise DatasetError(f"no audio files in class folders under {root}; DCASE2014 needs "
                           "ROOT/CLASS/*.wav (optionally inside train/ and test/)")
    return items

# --- Kinetics-Sound -------------------------------------------------------------------------------
# CrissCross paper, Appendix C.1: the 32 Kinetics-400 classes as the authors listed them
# (crisscross.paper re-exports this tuple beside the paper's numbers).
KINETICS_SOUND_CLASSES = (
    "blowing_nose", "blowing_out_candles", "bowling", "chopping_wood", "dribbling_basketball",
    "laughing", "mowing_lawn", "playing_accordion", "playing_bagpipes", "playing_bass_guitar",
    "playing_clarinet", "playing_drums", "playing_guitar", "playing_harmonica", "playing_keyboard",
    "playing_organ", "playing_piano", "playing_saxophone", "playing_trombone", "playing_trumpet",
    "playing_violin", "playing_xylophone", "ripping_paper", "shoveling_snow", "shuffling_cards",
    "singing", "stomping_grapes", "strumming_guitar", "tap_dancing", "tapping_guitar", "tapping_pen",
    "tickling",
)

def _norm_class(name: str) -> str:
    """Kinetics class names appear as 'playing guitar', 'playing_guitar' or '"playing guitar"'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")

def kinetics(root: str | os.PathLike, classes: tuple[str, ...] | None = None,
             annotations: str | os.PathLike | None = None) -> list[SourceItem]:
    """Kinetics(-400) videos of ``classes`` (all when None), split "train" or "test" (= Kinetics val).

    Either a class-folder layout (``root/{train,val}/CLASS/*.mp4`` or ``root/CLASS/*.mp4``, then all
    "train"), or an annotation CSV (label, youtube_id, time_start, time_end, split) with the videos
    anywhere under ``root`` named ``YOUTUBEID*.mp4``. Kinetics' validation set is the test set of
    downstream evaluation. Videos missing on disk (dead YouTube ids) are skipped, not fatal.
    """
    root = Path(root)
    wanted = None if classes is None else {_norm_class(c) for c in classes}
    if annotations is not None:
        items = _kinetics_csv(root, Path(annotations), wanted)
    else:
        parts = [(("train" if d.name.lower() in TRAIN_NAMES else "test"), d) for d in _subdirs(root)
                 if d.name.lower() in TRAIN_NAMES + TEST_NAMES] or [("train", root)]
        items = [_stem_item(f, _norm_class(label), part, "kinetics")
                 for part, folder in parts for label, files in _class_files(folder, VIDEO_EXTS)
                 if wanted is None or _norm_class(label) in wanted for f in files]
    if not items:
        raise DatasetError(f"no videos of the requested Kinetics classes under {root}; expected "
                           "ROOT/[train|val/]CLASS/*.mp4 or an annotation CSV (--annotations)")
    return items

def _kinetics_csv(root: Path, annotations: Path, wanted: set[str] | None) -> list[SourceItem]:
    _require(annotations, "Kinetics annotation CSV", "pass the kinetics400 train.csv / validate.csv")
    # Files are named by YouTube id, optionally followed by _START_END (11-character ids).
    on_disk = {f.name[:11]: f for f in sorted(root.rglob("*")) if f.suffix.lower() in VIDEO_EXTS}
    items = []
    with open(annotations, newline="") as f:
        for row in csv.DictReader(f):
            label = _norm_class(row["label"])
            path = on_disk.get(row["youtube_id"])
            if (wanted is not None and label not in wanted) or path is None:
                continue
            trimmed = path.stem != row["youtube_id"]      # already cut to [start, end]
            start, end = (None, None) if trimmed else (float(row["time_start"]), float(row["time_end"]))
            split = "train" if row.get("split", "train").lower() in TRAIN_NAMES else "test"
            items.append(SourceItem(path=str(path), label=label, split=split, start=start, end=end,
                                    id=_safe_id("kinetics", row["youtube_id"], label)))
    return items

def kinetics_sound(root: str | os.PathLike, split: int = 1,
                   annotations: str | os.PathLike | None = None) -> list[SourceItem]:
    """Kinetics-Sound: the 32 Kinetics-400 classes the CrissCross authors listed (one split).

    ``root`` is a Kinetics folder, or an annotation CSV whose folder (recursively) holds the videos.
    """
    if Path(root).is_file():
        root, annotations = Path(root).parent, root
    return kinetics(root, KINETICS_SOUND_CLASSES, annotations)

# --- dispatch -------------------------------------------------------------------------------------
DATASETS: dict[str, Callable[..., list[SourceItem]]] = {
    "ucf101": ucf101, "hmdb51": hmdb51, "esc50": esc50, "dcase2014": dcase2014,
    "kinetics-sound": kinetics_sound,
}

def dataset_items(name: str, root: str | os.PathLike, split: int = 1) -> list[SourceItem]:
    """The items of dataset ``name`` (a key of :data:`DATASETS`) at ``root`` for split/fold ``split``."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not Path(root).exists():
        raise DatasetError(f"dataset folder {root} does not exist; pass the extracted {name} folder")
    return DATASETS[name](root, split=split)

# --- helpers --------------------------------------------------------------------------------------
def _lines(path: Path) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]

def _subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir())

def _class_files(folder: Path, exts: tuple[str, ...]) -> list[tuple[str, list[Path]]]:
    """(class name, sorted files) for each class folder holding files with one of ``exts``."""
    out = []
    for d in _subdirs(folder):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in exts)
        if files:
            out.append((d.name, files))
    return out
