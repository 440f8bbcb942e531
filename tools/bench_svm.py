"""The linear-SVM C sweep of `crisscross eval linear` against feature extraction and scikit-learn.

Issue 15's target: on CPU the sweep costs at most half the time of extracting its features, with
the accuracy of scikit-learn's ``LinearSVC`` within noise. Builds the real labelled game sounds of
the public media (classes with at least 4 sounds; sounds 1-2 of each class are the test videos),
extracts the ESC-50 protocol's features (2 s log-mel, conv5 max-pooled to 4608-d, E.1's augmented
training clips and uniform test clips) from a random-init ResNet-18, then runs the whole C sweep
(paper.SVM_C) three ways side by side: ours choosing C on validation (the default), ours scoring
every C on test, and ``LinearSVC`` (the same standardisation, clip scores averaged per video) scoring
every C on test. Times are wall and CPU seconds of this process; one torch thread.

    .venv/bin/python tools/bench_svm.py [--train-clips 10] [--write]
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
import time
import warnings
from pathlib import Path

import click
import numpy as np
import torch

from avshards.build import build
from avshards.sources import SourceItem
from benchutil import cpu_seconds, write_section
from crisscross.eval.features import extract, load_backbones, protocol_spec
from crisscross.eval.svm import ClipFeatures, average_per_video, svm_sweep
from crisscross.paper import SVM_C

MEDIA = Path(os.environ.get("AVSHARDS_MEDIA", Path.home() / ".cache" / "avshards-media"))
SECTION = "## Linear-SVM C sweep against feature extraction"


def sound_items() -> list[SourceItem]:
    """Every game sound of a class with at least 4 of them; numbers 1-2 are the test split."""
    files = sorted((MEDIA / "audio" / "arcade_sfx").glob("*.wav"))
    parsed = [(f, *re.fullmatch(r"([a-z]+)(\d+)", f.stem).groups()) for f in files if re.fullmatch(r"[a-z]+\d+", f.stem)]
    counts = {c: sum(1 for _, k, _ in parsed if k == c) for _, c, _ in parsed}
    return [SourceItem(str(f), c, "test" if int(n) <= 2 else "train", id=f.stem)
            for f, c, n in parsed if counts[c] >= 4]


def timed(fn):
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, cpu_seconds() - c0


def sklearn_sweep(train: ClipFeatures, test: ClipFeatures) -> dict[float, float]:
    """Test accuracy per C of LinearSVC (default tolerance and iterations), scores averaged per video."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    classes = sorted(set(train.labels))
    y = np.array([classes.index(train.labels[v]) for v in train.video])
    scaler = StandardScaler().fit(train.features)
    x, xt = scaler.transform(train.features), scaler.transform(test.features)
    truth = np.array([classes.index(label) if label in classes else -1 for label in test.labels])
    accuracy = {}
    for c in SVM_C:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LinearSVC(C=c).fit(x, y)
        scores = average_per_video(model.decision_function(xt), test.video, test.num_videos)
        accuracy[c] = float((scores.argmax(1) == truth).mean())
    return accuracy


@click.command()
@click.option("--train-clips", default=10, show_default=True, help="Augmented clips per training sound (E.1: 10).")
@click.option("--test-clips", default=10, show_default=True, help="Uniform clips per test sound (E.1: 10).")
@click.option("--write", is_flag=True, help="Replace this tool's section of docs/benchmarks.md.")
def main(train_clips: int, test_clips: int, write: bool) -> None:
    """Time extraction and the three sweeps; print (and optionally write) a markdown table."""
    torch.set_num_threads(1)     # shared cores: torch's thread pool only spins
    backbones, spec = load_backbones(None), protocol_spec("audio_linear", "audio")
    items = sound_items()
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "sounds")
        build(items, url, workers=2, progress=False)
        (feats, ext_wall, ext_cpu) = timed(lambda: (
            extract(url, "train", backbones, [spec], train_clips, True, progress=False)["audio"],
            extract(url, "test", backbones, [spec], test_clips, False, progress=False)["audio"]))
    train, test = feats
    ours_val, val_wall, val_cpu = timed(lambda: svm_sweep(train, test))
    ours_test, test_wall, test_cpu = timed(lambda: svm_sweep(train, test, select_on="test"))
    theirs, sk_wall, sk_cpu = timed(lambda: sklearn_sweep(train, test))
    ours_acc = {c: ours_test.sweep[c]["test"] for c in SVM_C}
    n_test = test.num_videos
    noise = 100 * np.sqrt(0.25 / n_test)        # the largest binomial standard error of an accuracy here
    best_ours, best_theirs = max(ours_acc.values()), max(theirs.values())
    rows = [f"| extract features (train {len(train.features)} clips + test {len(test.features)} clips) "
            f"| {ext_wall:.1f} | {ext_cpu:.1f} | 1.00 | |",
            f"| our sweep, C on validation (default: 8 fits + 1 refit) | {val_wall:.1f} | {val_cpu:.1f} | "
            f"{val_cpu / ext_cpu:.2f} | C={ours_val.C:g}: {100 * ours_val.accuracy:.1f}% |",
            f"| our sweep, every C on test | {test_wall:.1f} | {test_cpu:.1f} | {test_cpu / ext_cpu:.2f} | "
            f"best {100 * best_ours:.1f}% |",
            f"| scikit-learn LinearSVC, every C on test | {sk_wall:.1f} | {sk_cpu:.1f} | {sk_cpu / ext_cpu:.2f} | "
            f"best {100 * best_theirs:.1f}% |"]
    per_c = " / ".join(f"{c:g}: {100 * ours_acc[c]:.0f} vs {100 * theirs[c]:.0f}" for c in SVM_C)
    met = val_cpu <= 0.5 * ext_cpu
    load = os.getloadavg()
    text = (f"{SECTION}\n\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, one torch thread, load average {load[0]:.1f} at the end. Command: "
            f"`.venv/bin/python tools/bench_svm.py --train-clips {train_clips} --test-clips {test_clips} --write`. "
            f"Data: {len(items)} real game sounds of {len(set(i.label for i in items))} classes "
            f"({len(train.keys)} training, {n_test} test), ESC-50 protocol features "
            f"({train.features.shape[1]}-d), random-init ResNet-18, the sweep over C = {', '.join(f'{c:g}' for c in SVM_C)}.\n\n"
            "| step | wall s | CPU s | CPU / extraction | accuracy |\n|---|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nTarget (issue 15): the default sweep at most half the CPU time of extraction: "
            f"**{'met' if met else 'not met'}** ({val_cpu / ext_cpu:.2f}). Test accuracy per C, ours vs "
            f"LinearSVC (%): {per_c}; one test sound is {100 / n_test:.1f} points and the binomial noise "
            f"of an accuracy here is up to {noise:.1f} points.\n")
    click.echo(text)
    if write:
        write_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", SECTION, text)


if __name__ == "__main__":
    main()
