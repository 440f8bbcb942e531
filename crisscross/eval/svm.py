"""Linear SVM on frozen clip features (appendix E.1): C sweep, clip scores averaged per video.

The classifier is scikit-learn's ``LinearSVC`` on standardised features (one-vs-rest, squared
hinge), solved for the whole sweep by :mod:`crisscross.eval.svm_solver` (torch, CPU or GPU).

The paper reports the best test accuracy over the C sweep, i.e. it picks C on the test split. By
default we pick C on a held-out part of the *training* videos and only then touch the test split;
``select_on="test"`` reproduces the paper's (optimistic) choice and the result records which was used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from crisscross.eval.errors import EvalError
from crisscross.eval.svm_solver import LinearSVM, SVMProblem
from crisscross.paper import SVM_C

VAL_FRACTION = 0.2      # share of each class's training videos held out to choose C (not a paper number)


@dataclass
class ClipFeatures:
    """Features of several clips per video: row ``i`` of ``features`` belongs to video ``video[i]``."""

    features: np.ndarray            # [num_clips, dim] float32
    video: np.ndarray               # [num_clips] int, index into keys / labels
    keys: list[str]                 # one per video
    labels: list[str]               # one per video

    @property
    def num_videos(self) -> int:
        return len(self.keys)

    def subset(self, videos: np.ndarray) -> "ClipFeatures":
        """The clips of the given videos (indices), renumbered in that order."""
        remap = np.full(self.num_videos, -1)
        remap[videos] = np.arange(len(videos))
        rows = remap[self.video] >= 0
        return ClipFeatures(self.features[rows], remap[self.video[rows]],
                            [self.keys[i] for i in videos], [self.labels[i] for i in videos])

    def video_means(self) -> np.ndarray:
        """The average feature of each video's clips, [num_videos, dim]."""
        return average_per_video(self.features, self.video, self.num_videos)


def average_per_video(rows: np.ndarray, video: np.ndarray, num_videos: int) -> np.ndarray:
    """Mean of the rows that belong to each video (clip scores or features -> video level)."""
    out = np.zeros((num_videos, rows.shape[1]), np.float64)
    np.add.at(out, video, rows)
    counts = np.bincount(video, minlength=num_videos)
    if (counts == 0).any():
        raise ValueError("some videos have no clips; were their features extracted?")
    return out / counts[:, None]


@dataclass
class SVMResult:
    """Outcome of one C sweep on one split."""

    C: float
    accuracy: float                                  # video-level top-1 on the test split
    selected_on: str                                 # "validation" or "test"
    classes: list[str]
    y_true: np.ndarray                               # test videos, class indices
    y_pred: np.ndarray
    sweep: dict[float, dict[str, float]] = field(default_factory=dict)   # C -> {"validation"|"test": acc}

    def to_json(self) -> dict:
        return {"C": self.C, "accuracy": self.accuracy, "selected_on": self.selected_on,
                "num_test_videos": int(len(self.y_true)),
                "sweep": {str(c): v for c, v in self.sweep.items()}}


def predict_videos(model: LinearSVM, clips: ClipFeatures, num_classes: int) -> np.ndarray:
    """Class index per video: argmax of the clip decision scores averaged over each video's clips."""
    scores = model.decision_function(clips.features)
    # A class absent from the fitted part (possible only for a tiny validation fit) never wins.
    full = np.full((len(scores), num_classes), -1e9)
    full[:, model.classes] = scores
    return average_per_video(full, clips.video, clips.num_videos).argmax(1)


def validation_split(labels: list[str], fraction: float = VAL_FRACTION, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) video indices: ``fraction`` of each class's videos, at least one, held out.

    A class with a single video stays wholly in training (it cannot be both learned and checked).
    """
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    val = []
    for c in sorted(set(labels)):
        idx = np.flatnonzero(labels_arr == c)
        if len(idx) > 1:
            take = max(1, int(round(fraction * len(idx))))
            val.extend(rng.choice(idx, size=take, replace=False))
    val_arr = np.sort(np.asarray(val, dtype=int))
    return np.setdiff1d(np.arange(len(labels)), val_arr), val_arr


def _accuracy(model: LinearSVM, clips: ClipFeatures, classes: list[str]) -> tuple[float, np.ndarray, np.ndarray]:
    index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([index.get(c, -1) for c in clips.labels])
    y_pred = predict_videos(model, clips, len(classes))
    return float((y_true == y_pred).mean()), y_true, y_pred


def _rows_of(clips: ClipFeatures, videos: np.ndarray) -> np.ndarray:
    """Indices of the clips (rows) of the given videos, in row order."""
    return np.flatnonzero(np.isin(clips.video, videos))


def svm_sweep(train: ClipFeatures, test: ClipFeatures, cs: tuple[float, ...] = SVM_C,
              select_on: str = "validation", val_fraction: float = VAL_FRACTION, seed: int = 0,
              device: str | torch.device = "cpu") -> SVMResult:
    """Sweep C (ascending, each fit warm-started from the previous), choose it on ``select_on``
    ("validation" or "test"), report test accuracy. The solver runs on ``device``.

    Test videos whose class never occurs in training count as wrong (they cannot be right).
    """
    if select_on not in ("validation", "test"):
        raise ValueError(f"select_on must be 'validation' or 'test', not {select_on!r}")
    classes = sorted(set(train.labels))
    if len(classes) < 2:
        raise EvalError(f"the training split has one class ({classes[0]!r}); a classifier needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[train.labels[v]] for v in train.video])
    cs = tuple(sorted(cs))
    problem = SVMProblem(train.features, device)    # standardised and rotated once for every fit
    sweep: dict[float, dict[str, float]] = {}
    start = None
    if select_on == "validation":
        tr, va = validation_split(train.labels, val_fraction, seed)
        if len(va) == 0:
            raise EvalError("no class has two training videos, so no validation part can be held "
                             "out; pass select_on='test' (--select-on-test) to choose C on the test split")
        rows, val_part = _rows_of(train, tr), train.subset(va)
        fit_part, starts = problem.subset(rows), {}
        for c in cs:
            model, start = fit_part.fit(y[rows], c, start)
            starts[c] = start
            sweep[c] = {"validation": _accuracy(model, val_part, classes)[0]}
        del fit_part
        best = max(cs, key=lambda c: sweep[c]["validation"])    # ties: the smaller C (listed first)
        model, _ = problem.fit(y, best, starts[best])
        acc, y_true, y_pred = _accuracy(model, test, classes)
        sweep[best]["test"] = acc
        return SVMResult(best, acc, "validation", classes, y_true, y_pred, sweep)
    outcomes = {}
    for c in cs:
        model, start = problem.fit(y, c, start)
        outcomes[c] = _accuracy(model, test, classes)
        sweep[c] = {"test": outcomes[c][0]}
    best = max(cs, key=lambda c: sweep[c]["test"])
    acc, y_true, y_pred = outcomes[best]
    return SVMResult(best, acc, "test", classes, y_true, y_pred, sweep)
