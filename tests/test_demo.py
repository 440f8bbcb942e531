"""The README's main command, end to end on the real public media (one pretraining step)."""

import json

import pytest
from click.testing import CliRunner

from crisscross.cli import main


@pytest.mark.slow
def test_demo_writes_a_complete_report(media, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--media", str(media), "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.md'}" in result.output
    for name in ("report.md", "metrics.json", "commands.sh", "scale-up.sh", "preview.png", "loss-curve.png",
                 "confusion.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["pretrained_accuracy"] <= 1 and 0 <= metrics["random_init_accuracy"] <= 1
    commands = (out / "commands.sh").read_text()
    for step in ("avshards build", "avshards inspect", "avshards preview", "crisscross train",
                 "crisscross eval linear"):
        assert step in commands
    report = (out / "report.md").read_text()
    assert "| random init |" in report and "torchrun" in report
