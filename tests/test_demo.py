"""The README's main command, end to end on the real public media (three pretraining steps)."""

import csv
import json
import math

import pytest
from click.testing import CliRunner

from crisscross.cli import main

STEPS = 3


@pytest.mark.slow
def test_demo_reports_what_its_steps_measured(media, tmp_path):
    """The report, metrics.json and the printed result are the eval report's numbers, and the loss
    curve is the run's, one point per step.

    Mutants this kills: pretrained and random-init accuracies swapped or taken from another split
    (compared with the eval JSON); the margin's n counting clips or classes instead of held-out sounds
    (compared with the demo's own sound lists); a fold holding a sound out twice or not at all, or
    a fold left out of the evaluation (the per-split counts); the printed sentence or report.md built from other
    numbers than metrics.json's; the curve sampled every N steps, truncated to the last step or off
    by one (compared with 1..STEPS and log.csv); a step missing from the timing table or commands.sh."""
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--media", str(media), "--steps", str(STEPS)])
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.md'}" in result.output
    for name in ("report.md", "metrics.json", "commands.sh", "scale-up.sh", "preview.png", "loss-curve.png",
                 "confusion.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    evaluation = json.loads((out / "eval" / "linear-audio-game-sounds.json").read_text())

    # the accuracies are the eval report's, the margin is their difference on the held-out sounds
    folds = sorted(out.glob("sounds-*.csv"))
    per_fold = []
    for fold in folds:
        with open(fold, newline="") as f:
            per_fold.append([row[0] for row in csv.reader(f) if row[4] == "test"])
    tested = [sound for fold in per_fold for sound in fold]
    held_out = len(tested)
    assert len(folds) == 3 and held_out == len(set(tested)) >= 45      # every sound held out once
    assert [s["num_test_videos"] for s in evaluation["splits"]] == [len(fold) for fold in per_fold]
    m = metrics["margin"]
    assert metrics["pretrained_accuracy"] == m["pretrained"] == evaluation["accuracy"]
    assert metrics["random_init_accuracy"] == m["random_init"] == evaluation["baseline"]["accuracy"]
    assert m["test_sounds"] == held_out
    assert m["margin"] == pytest.approx(evaluation["accuracy"] - evaluation["baseline"]["accuracy"])
    p, q = evaluation["accuracy"], evaluation["baseline"]["accuracy"]
    assert m["se_margin"] == pytest.approx(math.hypot(math.sqrt(p * (1 - p) / held_out),
                                                      math.sqrt(q * (1 - q) / held_out)))
    # what the user reads (terminal and report.md) says those numbers
    said = f"Pretrained {p:.1%} against random init {q:.1%} on {held_out} held-out sounds"
    report = (out / "report.md").read_text()
    assert said in result.output and said in report
    table = (out / "eval" / "linear-audio-game-sounds.md").read_text().replace("# ", "### ", 1)
    assert table in report and "| random init |" in report and "torchrun" in report

    # the loss curve: every step once, the run's own losses
    curve = metrics["loss_curve"]
    assert [point["step"] for point in curve] == list(range(1, STEPS + 1))
    with open(out / "run" / "log.csv", newline="") as f:
        logged = [float(row["loss"]) for row in csv.DictReader(f)]
    assert [point["loss"] for point in curve] == logged
    assert all(math.isfinite(point["loss"]) for point in curve)

    # every step timed and replayable
    commands = (out / "commands.sh").read_text().splitlines()
    timed = [t["command"] for t in metrics["steps"]]
    assert timed == commands[2:]
    assert [t["step"] for t in metrics["steps"]] == ["avshards build", "avshards inspect", "avshards preview",
                                                    "crisscross train", *["avshards build"] * 3,
                                                    "crisscross eval"]
    assert all(t["wall_s"] >= 0 and t["cpu_s"] >= 0 for t in metrics["steps"])
    assert sum(f"| {t['name']} |" in report for t in metrics["steps"]) == len(metrics["steps"])
