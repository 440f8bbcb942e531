"""Fig. 4 / 5: pretraining loss per term and linear-probe accuracy against epoch, several runs per plot.

Reads each run folder's ``log.csv`` (written by :class:`crisscross.monitor.RunLog`): ``step``,
``epoch``, ``loss`` and one ``loss/PAIR`` column per enabled pair term (``loss/v1v2`` ...). A group's
curve (intra, sync, async) is the mean of its pair terms present in the row, the same mean the loss
takes (:mod:`crisscross.losses`). Rows are averaged per epoch (the paper plots per epoch).

Linear-probe accuracy is read, when a run has it, from columns named ``probe/NAME`` (top-1 as a
fraction, e.g. ``probe/ucf101``) of ``log.csv`` or of a ``probe.csv`` beside it with an ``epoch``
column (one row per evaluated checkpoint: ``epoch`` = pretraining epochs done when it was written).
Epoch N on the plots is the N-th epoch (``log.csv``'s 0-based ``epoch`` column + 1). Panels
without data in any run are left out.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crisscross.losses import GROUPS
from crisscross.viz import VizError, pyplot

LOG_NAME = "log.csv"
PROBE_NAME = "probe.csv"
PROBE_PREFIX = "probe/"
X_AXES = ("epoch", "step")
PANEL_INCHES = (4.5, 3.2)
DPI = 100


@dataclass
class Run:
    """One run's curves: name -> (x values, y values), x per ``x_axis``."""

    name: str
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _float(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_rows(path: str | os.PathLike) -> list[dict[str, float]]:
    """A CSV file as rows of floats (empty / unreadable cells are NaN)."""
    with open(path, newline="") as f:
        return [{k: _float(v) for k, v in r.items() if k} for r in csv.DictReader(f)]


def loss_columns(row_keys: Sequence[str]) -> dict[str, list[str]]:
    """The curves of the loss: "total" from ``loss``, each group from its ``loss/PAIR`` columns."""
    out = {"total": ["loss"]} if "loss" in row_keys else {}
    for group, pairs in GROUPS.items():
        cols = [f"loss/{p}" for p in pairs if f"loss/{p}" in row_keys]
        if cols:
            out[group] = cols
    return out


def per_x(rows: Sequence[dict[str, float]], x_axis: str, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over ``columns`` of each row, then averaged over rows sharing an ``x_axis`` value."""
    xs = np.array([r.get(x_axis, math.nan) for r in rows])
    ys = np.array([np.nanmean([r.get(c, math.nan) for c in columns]) if any(
        not math.isnan(r.get(c, math.nan)) for c in columns) else math.nan for r in rows])
    keep = ~np.isnan(xs) & ~np.isnan(ys)
    xs, ys = xs[keep], ys[keep]
    values = np.unique(xs)
    return values, np.array([ys[xs == v].mean() for v in values])


def run_log(run: str | os.PathLike) -> Path:
    """The ``log.csv`` of a run folder (or the file itself), with a clear error when there is none."""
    path = Path(run)
    path = path / LOG_NAME if path.is_dir() else path
    if not path.is_file():
        raise VizError(f"{run} has no {LOG_NAME}; pass a run folder written by `crisscross train` "
                       "(or its log.csv)")
    return path


def read_run(run: str | os.PathLike, name: str | None = None, x_axis: str = "epoch") -> Run:
    """The loss-term and probe curves of one run (folder or log.csv)."""
    if x_axis not in X_AXES:
        raise VizError(f"unknown x axis {x_axis!r}; use one of {', '.join(X_AXES)}")
    log = run_log(run)
    rows = read_rows(log)
    if not rows:
        raise VizError(f"{log} has no rows yet; train for at least --log-every steps first")
    if x_axis not in rows[0]:
        raise VizError(f"{log} has no {x_axis!r} column; use --x step")
    for r in rows:   # log.csv has the 0-based epoch in progress; plot "epoch N" = the N-th epoch
        r["epoch"] = r.get("epoch", math.nan) + 1
    out = Run(name or (log.parent.name if log.name == LOG_NAME else log.stem))
    for curve, cols in loss_columns(list(rows[0])).items():
        out.curves[curve] = per_x(rows, x_axis, cols)
    probe_rows = rows + (read_rows(log.parent / PROBE_NAME) if (log.parent / PROBE_NAME).is_file() else [])
    probe_x = "epoch"    # a probe evaluates a checkpoint of an epoch, whatever the loss's x axis
    for col in dict.fromkeys(k for r in probe_rows for k in r if k.startswith(PROBE_PREFIX)):
        x, y = per_x([r for r in probe_rows if col in r], probe_x, [col])
        if len(x):
            out.curves[col] = (x, y)
    return out


def plot_curves(runs: Sequence[Run], path: str | Path, x_axis: str = "epoch") -> tuple[Path, list[str]]:
    """One panel per curve any run has (total, intra, sync, async, then each probe/NAME), one line
    per run. Returns the PNG path and the panel names in order. The picture is
    ``len(panels) * 4.5`` by ``3.2`` inches at 100 dpi."""
    plt = pyplot()
    order = ["total", *GROUPS]
    names = [n for n in order if any(n in r.curves for r in runs)]
    names += sorted({n for r in runs for n in r.curves if n not in order})
    if not names:
        raise VizError("none of the runs has loss or probe columns in its log; nothing to plot")
    w, h = PANEL_INCHES
    fig, axes = plt.subplots(1, len(names), figsize=(w * len(names), h), squeeze=False)
    for ax, name in zip(axes[0], names):
        for i, run in enumerate(runs):
            if name in run.curves:
                x, y = run.curves[name]
                y = 100 * y if name.startswith(PROBE_PREFIX) else y
                # One colour per run on every panel, so a run is recognised across panels.
                ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, color=f"C{i % 10}", label=run.name)
        probe = name.startswith(PROBE_PREFIX)
        ax.set_title(f"linear probe: {name[len(PROBE_PREFIX):]}" if probe else
                     "loss" if name == "total" else f"L_{name}", fontsize=9)
        ax.set_xlabel("pretraining epoch" if probe or x_axis == "epoch" else "step")
        ax.set_ylabel("top-1 accuracy (%)" if probe else "loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path), names
