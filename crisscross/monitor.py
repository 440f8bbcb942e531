"""Watching a run: CSV + TensorBoard logs, a loss curve PNG, the collapse monitor and the NaN guard."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number; the message says at which step and what to try."""


def collapse_std(z: torch.Tensor) -> torch.Tensor:
    """SimSiam's collapse indicator: the per-dimension std over the batch of the l2-normalised
    outputs, averaged over dimensions. About 1/sqrt(d) for healthy outputs, 0 when every sample is
    mapped to the same vector (collapse). A 0-d tensor on ``z``'s device (no host sync)."""
    z = F.normalize(z.detach().float(), dim=1)
    return z.std(dim=0).mean()


def check_finite(loss: float, step: int, lr: float, amp: str) -> None:
    """Raise :class:`TrainingDiverged` when ``loss`` (of step ``step``) is NaN or infinite.

    The trainer calls it on every step's loss when it copies them to the host (at log rows,
    checkpoints and probes), so it stops at the first of them and never writes a checkpoint after
    a non-finite step (docs/training.md, "NaN guard")."""
    if not math.isfinite(loss):
        _diverged(f"loss became {loss}", step, lr, amp)


def check_finite_weights(state: dict[str, torch.Tensor], step: int, lr: float, amp: str) -> None:
    """Raise :class:`TrainingDiverged` when a tensor of the model's ``state`` dict is not finite: an
    update can overflow the weights while the loss that drove it was finite, and a checkpoint of
    them would replace the last good one."""
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        _diverged(f"weights became non-finite ({bad})", step, lr, amp)


def _diverged(what: str, step: int, lr: float, amp: str) -> None:
    hints = [f"lower the learning rate (--lr, now {lr:g})", "enable LARC (--larc)"]
    if amp != "off":
        hints.append("train without mixed precision (--amp off) or with bf16")
    raise TrainingDiverged(f"{what} at step {step}; training stopped before writing a broken "
                           f"checkpoint. Try to {', or '.join(hints)}, then --resume auto.")


class RunLog:
    """CSV (``log.csv``) + TensorBoard (``tb/``, when installed) in the run folder; only rank 0
    makes one. Rows are appended under the file's header, blank where a row lacks a column (e.g.
    ``probe/NAME``, logged at epoch ends only); a row with new columns (or a resume, which drops the
    rows after the checkpoint's step) rewrites the file with the union of the columns."""

    def __init__(self, out: str | os.PathLike, resume_step: int = 0):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out / "log.csv"
        self.rows = self._read_rows(resume_step)
        self.columns: list[str] = []     # the header of log.csv as last written
        if self.rows:
            self._write_csv()   # drop the rows after the checkpoint now, before appending
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=resume_step or None)
        except ImportError:  # tensorboard is optional
            pass

    def _read_rows(self, resume_step: int) -> list[dict[str, Any]]:
        # On resume keep the rows up to the checkpoint's step; later ones were never checkpointed.
        if not resume_step or not self.csv_path.exists():
            return []
        with open(self.csv_path, newline="") as f:
            return [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]

    def log(self, step: int, values: dict[str, float]) -> None:
        """Record one row of scalars for ``step``."""
        row = {"step": step, **values}
        self.rows.append(row)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        if len(self.rows) > 1 and set(row) <= set(self.columns):
            with open(self.csv_path, "a", newline="") as f:   # the usual case: known columns, append
                csv.DictWriter(f, self.columns, restval="").writerow(row)
        else:
            self._write_csv()

    def _write_csv(self) -> None:
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        tmp = self.csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, columns, restval="")
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.csv_path)
        self.columns = columns

    def close(self) -> Path | None:
        """Flush TensorBoard and draw the loss curve; return the PNG's path."""
        if self.writer is not None:
            self.writer.close()
        return plot_curves(self.csv_path, self.out / "loss.png") if self.rows else None


def plot_curves(csv_path: str | os.PathLike, png: str | os.PathLike) -> Path:
    """Loss (and its terms), learning rate and collapse std against step, from a run's log.csv."""
    import matplotlib
    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]

    def series(key):
        return [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows]

    panels = [("loss", [k for k in rows[0] if k == "loss" or k.startswith("loss/")]),
              ("learning rate", [k for k in rows[0] if k.startswith("lr/")]),
              ("collapse std (healthy ~ 1/sqrt(d))", [k for k in rows[0] if k.startswith("std/")])]
    panels = [(t, ks) for t, ks in panels if ks]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for k in keys:
            ax.plot(steps, series(k), label=k, lw=2 if k == "loss" else 1)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)
