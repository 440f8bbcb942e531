"""Fig. 5 right: linear-evaluation accuracy against the size of the pretraining set.

Each point is one ``crisscross eval`` report (linear SVM or linear probe): its downstream dataset
gives the line, its top-1 accuracy the height, and the number of videos its checkpoint was
pretrained on the position on a logarithmic axis. That size is read from the report
(``pretraining.videos``, which ``crisscross eval`` records from the checkpoint's training shards'
manifest), else from the checkpoint itself, else it must be given (``--size METHOD=N``, where N
is a number or one of the paper's sets, e.g. ``kinetics400``). The paper's Table 4 numbers can
be drawn beside them (dashed), for the datasets whose names match.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from crisscross import paper
from crisscross.viz import VizError, pyplot

PROTOCOLS = ("linear", "probe")          # linear evaluation, as Fig. 5 plots (not fine-tuning)
PANEL_INCHES = (5.5, 4.0)
DPI = 100


@dataclass(frozen=True)
class ScalingPoint:
    """One report as a point: downstream dataset, pretrained method, set size, top-1 accuracy."""

    dataset: str
    method: str
    size: int
    accuracy: float
    source: str                           # where the size came from


def read_report(path: str | os.PathLike) -> dict:
    """A ``crisscross eval`` report of a linear protocol, with a clear error otherwise."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        report = None
    if not isinstance(report, dict) or not {"protocol", "dataset", "method", "accuracy"} <= set(report):
        raise VizError(f"{path} is not a report written by `crisscross eval`; pass the linear-....json "
                       "files of its --out")
    if report["protocol"] not in PROTOCOLS:
        raise VizError(f"{path} is a {report['protocol']} report; Fig. 5 plots linear evaluation "
                       "(`crisscross eval linear` or `probe` reports)")
    return report


def parse_size(value: str) -> int:
    """A number of videos ("240000", "240K", "1.8M") or a paper set name ("kinetics400")."""
    if value.lower() in paper.PRETRAIN_SET_SIZE:
        return paper.PRETRAIN_SET_SIZE[value.lower()]
    scale = {"k": 1_000, "m": 1_000_000}.get(value[-1:].lower(), 1)
    try:
        size = float(value[:-1] if scale > 1 else value) * scale
    except ValueError:
        raise VizError(f"size {value!r} is neither a number of videos (e.g. 240000, 240K, 1.8M) nor one of "
                       f"the paper's sets ({', '.join(paper.PRETRAIN_SET_SIZE)})") from None
    if size < 1:
        raise VizError(f"size {value!r} must be at least one video")
    return int(size)


def report_size(report: Mapping, sizes: Mapping[str, int]) -> tuple[int, str] | None:
    """(videos, where from) of the report's pretraining set: ``--size`` first, then the report,
    then its checkpoint; None when nothing says."""
    from crisscross.eval.protocols import pretraining_info

    if report["method"] in sizes:
        return sizes[report["method"]], "--size"
    info = report.get("pretraining") or {}
    if not info.get("videos") and report.get("checkpoint"):
        info = pretraining_info(report["checkpoint"])
    if info.get("videos"):
        return int(info["videos"]), info.get("source", "report")
    return None


def scaling_points(paths: Sequence[str], sizes: Mapping[str, int]) -> list[ScalingPoint]:
    """The points of the reports at ``paths`` (baselines of random initialisation left out)."""
    points = []
    for path in paths:
        report = read_report(path)
        if report.get("random_init"):
            raise VizError(f"{path} evaluates a random initialisation: it has no pretraining set to plot "
                           "against; pass reports of pretrained checkpoints")
        found = report_size(report, sizes)
        if found is None:
            raise VizError(f"{path} does not say how many videos {report['method']!r} was pretrained on "
                           f"(its checkpoint {report.get('checkpoint')} has no readable training-shard "
                           f"manifest); pass --size {report['method']}=N (N videos, or e.g. kinetics400)")
        points.append(ScalingPoint(report["dataset"], report["method"], found[0], float(report["accuracy"]),
                                   found[1]))
    return points


def paper_points(datasets: Sequence[str]) -> list[ScalingPoint]:
    """Table 4's points for the downstream datasets among ``datasets`` (names compared without case)."""
    names = {d.lower(): d for d in paper.SCALING_DATASETS}
    return [ScalingPoint(names[d.lower()], f"paper ({pre})", paper.PRETRAIN_SET_SIZE[pre], top1, "Table 4")
            for d in dict.fromkeys(datasets) if d.lower() in names
            for pre, top1 in paper.LINEAR_TOP1[names[d.lower()]].items()]


def plot_scaling(points: Sequence[ScalingPoint], path: str | Path, reference: Sequence[ScalingPoint] = ()
                 ) -> Path:
    """Accuracy (%) against pretraining videos (log axis), one line per downstream dataset (its
    points sorted by size, each labelled with its method); the paper's points dashed, same colour.
    The picture is 5.5 x 4 inches at 100 dpi."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=PANEL_INCHES)
    datasets = list(dict.fromkeys(p.dataset for p in points))
    for i, dataset in enumerate(datasets):
        colour = f"C{i % 10}"
        own = sorted((p for p in points if p.dataset == dataset), key=lambda p: p.size)
        ax.plot([p.size for p in own], [100 * p.accuracy for p in own], marker="o", color=colour, label=dataset)
        for p in own:
            ax.annotate(p.method, (p.size, 100 * p.accuracy), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ref = sorted((p for p in reference if p.dataset.lower() == dataset.lower()), key=lambda p: p.size)
        if ref:
            ax.plot([p.size for p in ref], [100 * p.accuracy for p in ref], ls="--", marker="x", color=colour,
                    alpha=0.6, label=f"{dataset} (paper)")
    ax.set_xscale("log")
    ax.set_xlabel("pretraining set (videos)")
    ax.set_ylabel("linear evaluation top-1 (%)")
    ax.set_title("Linear evaluation vs. pretraining set size (Fig. 5 right)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
