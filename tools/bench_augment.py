"""The torch augmentation before and after issues 16 and 18, side by side in one run.

- **CPU**: CPU-ms per two-view clip of the augmentation alone (both video views and both audio views
  of the clip, from its decoded frames and PCM), in this process on one thread, on every clip of
  shards built from the public sample media (as ``make bench`` builds them): this checkout's
  ``crisscross/data/augment.py`` against the file at ``--against`` (default: the commit before
  issue 16), imported from git, interleaved, best of ``--repeats``.
- **GPU path**: the ops of one main-process augmentation batch (the views gathered from the decoded
  frames, then the two video and two audio views), counted with a ``TorchDispatchMode`` on ``meta``
  tensors (no GPU needed: every counted op is a kernel launch on CUDA; views are not counted), at two
  batch sizes: what the GPU path launches per batch, and whether it grows with the batch.

    python tools/bench_augment.py                     # JSON + a markdown table
    python tools/bench_augment.py --write             # also docs/bench-augment.json + its section
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))

from benchutil import OpCount, write_section  # noqa: E402

SECTION = "## Torch augmentation: before and after"
BEFORE = "0aa6147"          # main before issue 16 (the augmentation as issue 14 left it)


def module_at(rev: str, path: str = "crisscross/data/augment.py"):
    """``path`` as it was at git revision ``rev``, imported as a module of its own."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True,
                            check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"augment_at_{rev}", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(f.name)
    return module


def clip_inputs(url: str, visits: int) -> list[tuple[list, list, torch.Tensor, list]]:
    """Per clip of the shards (``visits`` passes): its two views' frames ([T, H, W, 3] uint8), their
    parameters, the two int16 PCM windows as floats and their audio parameters (mode mild)."""
    from avshards.reader import open_shards
    from crisscross.data.loader import decode_jpegs
    from crisscross.data.selection import PrepareClip

    prepare, out = PrepareClip("mild", 0, 0), []
    for epoch in range(visits):
        prepare.epoch = epoch
        for clip in open_shards(url):
            item = prepare(clip)
            if item is None:
                continue
            frames = [f.permute(1, 2, 0) for f in decode_jpegs(item.raw.jpegs)]
            views = [torch.stack([frames[j] for j in index]) for index in (item.raw.v1, item.raw.v2)]
            waves = torch.from_numpy(np.stack([item.raw.a1, item.raw.a2])).float() / 32768.0
            out.append((views, list(item.video), waves, list(item.audio)))
    return out


def augment_all(module, clips: list, batch_size: int = 16) -> None:
    """Both views of every clip, in batches of ``batch_size`` clips, as the loader's collate does."""
    for i in range(0, len(clips), batch_size):
        part = clips[i:i + batch_size]
        for v in range(2):
            module.augment_video_batch([c[0][v] for c in part], [c[1][v] for c in part])
            module.augment_audio_batch(torch.stack([c[2][v] for c in part]), [c[3][v] for c in part])


def cpu_costs(modules: dict, clips: list, repeats: int) -> dict:
    """CPU-ms per two-view clip of each module, interleaved repeats, the least disturbed kept."""
    best = {name: float("inf") for name in modules}
    for _ in range(repeats):
        for name, module in modules.items():
            t = time.process_time()
            augment_all(module, clips)
            best[name] = min(best[name], time.process_time() - t)
    return {name: round(1000 * s / len(clips), 2) for name, s in best.items()}


def gpu_path_ops(module, clips: list, batch_size: int, new: bool) -> int:
    """Ops of one GPU-path batch of ``batch_size`` clips on meta tensors: gather the views from the
    decoded frames, augment both video and both audio views."""
    from crisscross.data.loader import _views

    part = [clips[i % len(clips)] for i in range(batch_size)]
    meta = torch.device("meta")
    frames = [f.to(meta) for c in part for f in c[0][0]] + [f.to(meta) for c in part for f in c[0][1]]
    t = part[0][0][0].shape[0]
    waves = [torch.stack([c[2][v] for c in part]).to(meta) for v in range(2)]
    kw = {"batched": True} if new else {}

    def run() -> None:
        for v in range(2):
            index = torch.tensor([[v * batch_size * t + j for j in range(t)] for _ in range(batch_size)])
            if new:
                views = _views(frames, [0] * batch_size, index, meta)
            else:                                     # the old path: one stack per clip
                views = [torch.stack([frames[k] for k in row]) for row in index.tolist()]
            module.augment_video_batch(views, [c[1][v] for c in part], **kw)
            module.augment_audio_batch(waves[v], [c[3][v] for c in part])

    run()                                             # warm the caches (windows, filterbank, constants)
    with OpCount() as count:
        run()
    return count.ops


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_at_start": [round(x, 1) for x in os.getloadavg()], "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(r: dict) -> str:
    c, o = r["cpu_ms_per_clip"], r["gpu_path_ops"]
    sizes = sorted(int(b) for b in o["after"])
    lines = ["| | before (" + r["against"] + ") | after | ratio |", "|---|---|---|---|",
             f"| CPU-ms per two-view clip, augmentation alone (CPU schedule) | {c['before']} | {c['after']} | "
             f"{c['before'] / c['after']:.1f}x |"]
    for b in sizes:
        lines.append(f"| ops of one GPU-path batch of {b} clips | {o['before'][str(b)]} | {o['after'][str(b)]} | "
                     f"{o['before'][str(b)] / o['after'][str(b)]:.0f}x |")
    return "\n".join(lines)


def section(r: dict) -> str:
    m = r["machine"]
    return f"""{SECTION}

Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; load average {m['load_at_start'][0]} at start
({m['date']}; the cores were shared with other jobs: the ratio, measured interleaved in one run, is the
figure to read). Command: `{r['command']}` (raw numbers: [bench-augment.json](bench-augment.json)).
The same clips ({r['clips']} two-view clips of the `make bench` media, mode mild, batches of 16), the
same parameters, both implementations in one process: `crisscross/data/augment.py` at
{r['against']} (before issue 16) and now.

{table(r)}

The GPU-path rows count the ops one batch launches (views gathered from the decoded frames, two video
and two audio views), on meta tensors: before, a crop per clip, a stack per clip, a spectrogram crop per
sample and a jitter loop with an index copy per (position, op); now a fixed number whatever the batch
size (the crop, resize and flip of every clip as two batched matrix products per frame size, the
parameters as one tensor copied once, the jitter as fixed slots).
"""


@click.command()
@click.option("--media", type=click.Path(file_okay=False),
              default=os.environ.get("AVSHARDS_MEDIA", str(Path.home() / ".cache" / "avshards-media")),
              show_default=True, help="Folder of the public sample media (`make media`).")
@click.option("--against", default=BEFORE, show_default=True, help="Git revision of the 'before' augment.py.")
@click.option("--visits", default=3, show_default=True, help="Passes over the shards' clips (fresh draws each).")
@click.option("--repeats", default=3, show_default=True, help="Interleaved repeats; the least disturbed is kept.")
@click.option("--write", is_flag=True, help="Write docs/bench-augment.json and this tool's section of docs/benchmarks.md.")
def main(media: str, against: str, visits: int, repeats: int, write: bool) -> None:
    """Time the torch augmentation before and after, and count the GPU path's ops."""
    import bench

    torch.set_num_threads(1)
    result = {"machine": machine(), "command": " ".join(["python", "tools/bench_augment.py", *sys.argv[1:]]),
              "against": against}
    with tempfile.TemporaryDirectory() as tmp:
        url = str(bench.build_shards(bench.source_files(Path(media), bench.FULL_FILES), Path(tmp) / "shards"))
        clips = clip_inputs(url, visits)
    from crisscross.data import augment

    modules = {"before": module_at(against), "after": augment}
    result["clips"] = len(clips)
    result["cpu_ms_per_clip"] = cpu_costs(modules, clips, repeats)
    result["gpu_path_ops"] = {name: {str(b): gpu_path_ops(m, clips, b, name == "after") for b in (8, 32)}
                              for name, m in modules.items()}
    click.echo(json.dumps(result, indent=1))
    click.echo(table(result))
    if write:
        (REPO / "docs" / "bench-augment.json").write_text(json.dumps(result, indent=1) + "\n")
        write_section(REPO / "docs" / "benchmarks.md", SECTION, section(result))


if __name__ == "__main__":
    main()
