"""CPU step time of the tiny-cpu preset: one optimiser step (forward + backward of the four views
through the real 50M-parameter model, Adam update) at the preset's batch size.

    .venv/bin/python tools/bench_train_step.py                 # model step only, synthetic batches
    .venv/bin/python tools/bench_train_step.py --shards DIR    # also a whole tiny-cpu run (loader included)

Prints the median / min step time, the machine and the load average (the CPU may be shared);
docs/benchmarks.md ("Training step") records a run.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time

import click
import torch


@click.command()
@click.option("--steps", default=5, show_default=True, help="Timed steps (after one warm-up step).")
@click.option("--batch-size", type=int, help="Batch (default: the tiny-cpu preset's).")
@click.option("--shards", help="Also time a whole `tiny-cpu` training run on these shards.")
def main(steps: int, batch_size: int | None, shards: str | None) -> None:
    """Time the training step of the tiny-cpu preset on this CPU."""
    from crisscross import paper
    from crisscross.config import preset_config
    from crisscross.models import build_crisscross
    from crisscross.optim import build_optimizer
    from crisscross.train import train, train_step

    config = preset_config("tiny-cpu", batch_size=batch_size)
    b = config.batch_size
    torch.manual_seed(0)
    model = build_crisscross()
    opt = build_optimizer(model, config.lr, config.lr_predictor, config.weight_decay)
    s, t = paper.CROP_SIZE, int(paper.AUDIO_SECONDS * paper.SAMPLE_RATE) // paper.AUDIO_AUG.hop_length + 1
    batch = {"v1": torch.randn(b, 3, paper.VIDEO_FRAMES, s, s), "v2": torch.randn(b, 3, paper.VIDEO_FRAMES, s, s),
             "a1": torch.randn(b, 1, paper.AUDIO_AUG.n_mels, t), "a2": torch.randn(b, 1, paper.AUDIO_AUG.n_mels, t)}
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        train_step(model, opt, None, [batch], config.terms, None, torch.device("cpu"))
        if i:
            times.append(time.perf_counter() - start)
    click.echo(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
               f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    click.echo(f"tiny-cpu model step, batch {b}: median {statistics.median(times):.2f} s, "
               f"min {min(times):.2f} s over {steps} steps ({b / statistics.median(times):.2f} clips/s)")
    if shards:
        with tempfile.TemporaryDirectory() as out:
            result = train(preset_config("tiny-cpu", shards=shards, out=out, batch_size=batch_size), progress=False)
        click.echo(f"tiny-cpu run ({result.steps} steps, loader included): {result.seconds:.1f} s, "
                   f"{result.seconds / result.steps:.2f} s/step, {result.clips / result.seconds:.2f} clips/s")


if __name__ == "__main__":
    main()
