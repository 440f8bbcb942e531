"""The frozen-feature protocols of appendix E, each one function from backbones + shard folders to a
report: linear SVM (E.1), late fusion (E.1), retrieval (E.3). One shard folder per split / fold;
results are averaged over them as the paper does. Reports are plain dicts (see report.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crisscross import paper
from crisscross.eval.features import ClipSpec, cached_extract
from crisscross.eval.report import confusion_matrix, markdown_table, mean_std
from crisscross.eval.retrieval import recall_at_k
from crisscross.eval.svm import VAL_FRACTION, ClipFeatures, SVMResult, svm_sweep


@dataclass(frozen=True)
class Extraction:
    """How features are taken (everything but the clip specs): where, how many clips, how fast."""

    checkpoint: str | None                 # None: random initialisation
    train_clips: int
    test_clips: int
    train_split: str = "train"
    test_split: str = "test"
    cache_dir: str | None = None
    batch_size: int = 32
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    workers: int = 0                       # processes decoding / transforming clips

    def features(self, url: str, backbones: dict[str, nn.Module], specs: Sequence[ClipSpec],
                 train: bool, augment: bool | None = None) -> dict[str, ClipFeatures]:
        """Training (augmented unless ``augment`` says otherwise) or test (uniform) clip features."""
        return cached_extract(self.cache_dir, self.checkpoint, url,
                              self.train_split if train else self.test_split, backbones, specs,
                              self.train_clips if train else self.test_clips,
                              train if augment is None else augment, seed=self.seed,
                              batch_size=self.batch_size, device=self.device, progress=self.progress,
                              workers=self.workers)


def method_label(checkpoint: str | None) -> str:
    """The row name of a report: the run folder / checkpoint name, or "random init"."""
    if checkpoint is None:
        return "random init"
    path = os.path.abspath(checkpoint)
    name = os.path.basename(path)
    return os.path.basename(os.path.dirname(path)) if name in ("checkpoint.pt", "") else name


def pretraining_info(checkpoint: str | None) -> dict:
    """What ``checkpoint`` was pretrained on: ``{"shards", "videos", "source"}`` from its training
    config's shard manifest (for an exported folder: from the checkpoint it came from); empty when
    that cannot be read (random initialisation, shards moved or unreachable)."""
    from avshards.reader import read_manifest
    from crisscross.checkpoint import CHECKPOINT_NAME, checkpoint_file

    if checkpoint is None:
        return {}
    path = Path(checkpoint)
    try:
        if path.is_dir() and not (path / CHECKPOINT_NAME).exists():     # an exported folder
            from crisscross.export import read_info

            source = read_info(path).get("source")
            return pretraining_info(source) if source and os.path.exists(source) else {}
        state = torch.load(checkpoint_file(path), map_location="cpu", weights_only=True, mmap=True)
        shards = (state.get("config") or {}).get("shards") if isinstance(state, dict) else None
        manifest = read_manifest(shards) if shards else None
    except (OSError, ValueError, RuntimeError):
        return {}
    if not manifest or not manifest.get("num_videos"):
        return {}
    return {"shards": shards, "videos": int(manifest["num_videos"]), "source": f"manifest of {shards}"}


def dataset_name(urls: Sequence[str]) -> str:
    """A column name for the shard folders: their common folder name (without a split suffix)."""
    names = [os.path.basename(os.path.normpath(u)) for u in urls]
    common = os.path.commonprefix(names).rstrip("-_0123456789") or names[0]
    return common


def _selection_note(select_on: str) -> str:
    if select_on == "test":
        return ("C chosen on the TEST split (--select-on-test), as the paper does: an optimistic "
                "estimate, reported for comparison with the paper only.")
    return (f"C chosen on a validation part of the training split ({VAL_FRACTION:.0%} of each "
            "class's training videos), then refitted on the whole training split.")


def _svm_summary(results: list[SVMResult]) -> tuple[dict, tuple[np.ndarray, list[str]]]:
    mean, std = mean_std([r.accuracy for r in results])
    classes = results[0].classes
    cm = sum(confusion_matrix(r.y_true, r.y_pred, len(classes)) for r in results if r.classes == classes)
    return {"accuracy": mean, "accuracy_std": std, "splits": [r.to_json() for r in results]}, (cm, classes)


def linear_eval(backbones: dict[str, nn.Module], urls: Sequence[str], spec: ClipSpec, how: Extraction,
                select_on: str = "validation", name: str | None = None, label: str | None = None
                ) -> tuple[dict, str, tuple[np.ndarray, list[str]]]:
    """Linear SVM on one modality's frozen features, averaged over the given splits (E.1).

    Returns (report, markdown table, (confusion matrix, classes)).
    """
    results, dim = [], 0
    for url in urls:
        train = how.features(url, backbones, [spec], train=True)[spec.modality]
        test = how.features(url, backbones, [spec], train=False)[spec.modality]
        results.append(svm_sweep(train, test, select_on=select_on, seed=how.seed, device=how.device))
        dim = train.features.shape[1]
    summary, confusion = _svm_summary(results)
    name, label = name or dataset_name(urls), label or method_label(how.checkpoint)
    report = {"title": f"Linear SVM ({spec.modality}) on {name}", "protocol": "linear",
              "method": label, "dataset": name, "shards": list(urls), "checkpoint": how.checkpoint,
              "random_init": how.checkpoint is None, "pretraining": pretraining_info(how.checkpoint),
              "spec": asdict(spec), "extraction": asdict(how), "feature_dim": int(dim),
              "C_sweep": list(paper.SVM_C),
              "select_on": select_on, **summary,
              "notes": [_selection_note(select_on), f"top-1 video accuracy averaged over {len(urls)} "
                        f"split(s); clip scores averaged per video."]}
    table = markdown_table(["Method", name], [[label, summary["accuracy"]]])
    return report, table, confusion


def fusion_eval(backbones: dict[str, nn.Module], urls: Sequence[str], specs: Sequence[ClipSpec],
                how: Extraction, select_on: str = "validation", name: str | None = None,
                label: str | None = None) -> tuple[dict, str, tuple[np.ndarray, list[str]]]:
    """Late fusion (E.1): video and audio features of the same clips, concatenated -> linear SVM.

    Also reports each modality alone, as the paper's Table 2 does: rows (a), (v), (a+v).
    """
    rows: dict[str, list[SVMResult]] = {"a": [], "v": [], "a+v": []}
    for url in urls:
        train = how.features(url, backbones, specs, train=True)
        test = how.features(url, backbones, specs, train=False)
        for row, mods in (("a", ["audio"]), ("v", ["video"]), ("a+v", ["video", "audio"])):
            tr, te = (_concat([feats[m] for m in mods]) for feats in (train, test))
            rows[row].append(svm_sweep(tr, te, select_on=select_on, seed=how.seed, device=how.device))
    summaries = {row: _svm_summary(res) for row, res in rows.items()}
    name, label = name or dataset_name(urls), label or method_label(how.checkpoint)
    report = {"title": f"Audio-visual late fusion on {name}", "protocol": "fusion", "method": label,
              "dataset": name, "shards": list(urls), "checkpoint": how.checkpoint,
              "random_init": how.checkpoint is None, "pretraining": pretraining_info(how.checkpoint),
              "specs": [asdict(s) for s in specs],
              "extraction": asdict(how), "select_on": select_on,
              "results": {row: s[0] for row, s in summaries.items()},
              "accuracy": summaries["a+v"][0]["accuracy"],
              "notes": [_selection_note(select_on), "features of the same clip windows concatenated "
                        "(video first) before the SVM."]}
    table = markdown_table(["Method", "Downstream", "Top-1"],
                           [[label, f"{name} ({row})", s[0]["accuracy"]] for row, s in summaries.items()])
    return report, table, summaries["a+v"][1]


def retrieval_eval(backbones: dict[str, nn.Module], urls: Sequence[str], spec: ClipSpec, how: Extraction,
                   name: str | None = None, label: str | None = None) -> tuple[dict, str, None]:
    """Retrieval (E.3): averaged uniform-clip features, test videos query training videos."""
    per_split = []
    for url in urls:
        train = how.features(url, backbones, [spec], train=True, augment=False)[spec.modality]
        test = how.features(url, backbones, [spec], train=False)[spec.modality]
        per_split.append(recall_at_k(train.video_means(), train.labels, test.video_means(), test.labels,
                                     paper.RETRIEVAL_K))
    recall = {f"R@{k}": mean_std([r[k] for r in per_split])[0] for k in paper.RETRIEVAL_K}
    name, label = name or dataset_name(urls), label or method_label(how.checkpoint)
    report = {"title": f"Video retrieval ({spec.modality}) on {name}", "protocol": "retrieval",
              "method": label, "dataset": name, "shards": list(urls), "checkpoint": how.checkpoint,
              "random_init": how.checkpoint is None, "pretraining": pretraining_info(how.checkpoint),
              "spec": asdict(spec), "extraction": asdict(how), "recall": recall, "splits": [{f"R@{k}": v for k, v in r.items()} for r in per_split],
              "notes": ["a query is correct at k when any of its k nearest training videos (cosine) "
                        "has its class; features are the mean of uniformly spaced clips."]}
    header = ["Method"] + [f"{name} R@{k}" for k in paper.RETRIEVAL_K]
    table = markdown_table(header, [[label] + [recall[f"R@{k}"] for k in paper.RETRIEVAL_K]])
    return report, table, None


def _concat(feats: list[ClipFeatures]) -> ClipFeatures:
    first = feats[0]
    return ClipFeatures(np.concatenate([f.features for f in feats], axis=1), first.video, first.keys,
                        first.labels)

