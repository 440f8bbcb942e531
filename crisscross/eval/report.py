"""Evaluation reports: a JSON file with everything, a markdown table laid out like the paper's
tables (one row per method, one column per downstream dataset / metric) and a confusion matrix.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats are printed as percentages with one decimal, like the paper."""
    def cell(v: Any) -> str:
        return f"{100 * v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation over splits / folds."""
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float(arr.std())


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]; true labels outside the classes (-1) are left out."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    keep = (y_true >= 0) & (y_true < num_classes)
    np.add.at(cm, (y_true[keep], y_pred[keep]), 1)
    return cm


def save_confusion_png(cm: np.ndarray, classes: list[str], path: str | Path, title: str) -> Path:
    """Draw a row-normalised confusion matrix (labels shown when there are few enough classes)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; never open a window
    import matplotlib.pyplot as plt

    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    n = len(classes)
    size = min(4 + 0.25 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    if n <= 60:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=max(4, 10 - n // 10))
        ax.set_yticks(range(n), classes, fontsize=max(4, 10 - n // 10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, name: str, report: dict[str, Any], table: str,
                 confusion: tuple[np.ndarray, list[str]] | None = None) -> dict[str, Path]:
    """Write ``NAME.json``, ``NAME.md`` (and ``NAME-confusion.png``) to ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {**report, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": platform.platform()}
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md"}
    paths["json"].write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    notes = "".join(f"\n- {n}" for n in report.get("notes", []))
    paths["markdown"].write_text(f"# {report.get('title', name)}\n\n{table}{notes}\n")
    if confusion is not None:
        cm, classes = confusion
        paths["confusion"] = save_confusion_png(cm, classes, out / f"{name}-confusion.png",
                                                report.get("title", name))
    return paths


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"cannot write {type(v).__name__} to a JSON report")


def report_cells(report: dict[str, Any]) -> dict[str, float]:
    """The table cells of one report: column name -> value (one per dataset / metric / fusion row)."""
    name = report["dataset"]
    if report["protocol"] == "retrieval":
        return {f"{name} {k}": v for k, v in report["recall"].items()}
    if report["protocol"] == "fusion":
        return {f"{name} ({row})": r["accuracy"] for row, r in report["results"].items()}
    return {name: report["accuracy"]}


def combine_reports(reports: list[dict[str, Any]]) -> str:
    """One markdown table from several reports, laid out like the paper's: a row per method (baselines
    included), a column per dataset / metric, in the order first seen; "-" where a method lacks one."""
    rows: dict[str, dict[str, float]] = {}
    columns: list[str] = []
    for report in reports:
        for r in (report, report.get("baseline")):
            if r is None:
                continue
            cells = report_cells(r)
            rows.setdefault(r["method"], {}).update(cells)
            columns += [c for c in cells if c not in columns]
    return markdown_table(["Method", *columns],
                          [[method, *(cells.get(c, "-") for c in columns)] for method, cells in rows.items()])
