"""Step time of pretraining: one optimiser step of the trainer (``crisscross.train.train_step``:
forward + backward of the four views through the real 50M-parameter model, Adam, optionally LARC
and AMP) on synthetic batches of the real shapes, and LARC's gradient scaling, the foreach kernels
against the per-tensor loop they replaced, side by side on the same gradients.

    .venv/bin/python tools/bench_train_step.py                         # tiny-cpu: batch 4 on this CPU
    .venv/bin/python tools/bench_train_step.py --shards DIR            # also a whole tiny-cpu run (loader included)
    python tools/bench_train_step.py --device cuda --batch-size 64     # a GPU: bf16 autocast, LARC (tools/gpu_check.sh)

Prints the machine, the load average (the CPU may be shared) and one JSON line per measurement;
docs/benchmarks.md ("Training step") records runs. On CUDA each timing is bracketed by
``torch.cuda.synchronize()`` (the step itself never waits on the host).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time

import click
import torch


def loop_larc_scaling(groups, trust_coefficient: float = 1e-3, eps: float = 1e-8) -> None:
    """LARC's gradient scaling (clip mode) one parameter tensor at a time, as crisscross.optim did
    before its foreach kernels: the reference that tests/test_optim.py and this benchmark hold the
    foreach version to (same results, ~16 small operations per tensor instead of a few per group)."""
    for group in groups:
        weight_decay = group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            w_norm, g_norm = p.norm(), p.grad.norm()
            rate = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps)
            rate = torch.clamp(rate / group["lr"], max=1.0) if group["lr"] > 0 else torch.ones_like(rate)
            active = (w_norm > 0) & (g_norm > 0)
            scale = torch.where(active, rate, torch.ones_like(rate))
            decay = torch.where(active, weight_decay * scale, torch.zeros_like(rate))
            p.grad.mul_(scale).add_(p * decay)


def synthetic_batch(batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random two-view batches of the paper's shapes: 3 x 8 x 112^2 video, 1 x 80 x 201 log-mel."""
    from crisscross import paper

    s = paper.CROP_SIZE
    t = int(paper.AUDIO_SECONDS * paper.SAMPLE_RATE) // paper.AUDIO_AUG.hop_length + 1
    return {**{k: torch.randn(batch_size, 3, paper.VIDEO_FRAMES, s, s, device=device) for k in ("v1", "v2")},
            **{k: torch.randn(batch_size, 1, paper.AUDIO_AUG.n_mels, t, device=device) for k in ("a1", "a2")}}


def timed(fn, repeats: int, sync: bool) -> list[float]:
    """Wall seconds of each of ``repeats`` calls (synchronised with the GPU around each)."""
    out = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def emit(row: dict) -> None:
    click.echo(json.dumps(row))


@click.command()
@click.option("--steps", default=5, show_default=True, help="Timed steps (after warm-up steps).")
@click.option("--batch-size", type=int, help="Clips per step (default: the tiny-cpu preset's, 4).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True,
              help="Autocast on CUDA (auto: bf16 where supported); always off on a CPU.")
@click.option("--larc/--no-larc", default=None, help="Wrap Adam in LARC (default: on for CUDA, off on a CPU).")
@click.option("--shards", help="Also time a whole tiny-cpu training run on these shards (on --device).")
def main(steps: int, batch_size: int | None, device: str, amp: str, larc: bool | None, shards: str | None) -> None:
    """Time the trainer's step (and LARC's scaling) on this machine."""
    from crisscross.config import preset_config
    from crisscross.models import build_crisscross
    from crisscross.optim import build_optimizer
    from crisscross.runtime import amp_dtype, grad_scaler, kernel_policy, pick_device
    from crisscross.train import train, train_step

    dev = pick_device(device)
    cuda = dev.type == "cuda"
    larc = cuda if larc is None else larc
    config = preset_config("tiny-cpu", batch_size=batch_size)
    dtype = amp_dtype(amp, dev)
    gpu = f", {torch.cuda.get_device_name(dev)}" if cuda else ""
    click.echo(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores{gpu}, "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
               f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with kernel_policy(dev, deterministic=False):
        torch.manual_seed(0)
        model = build_crisscross().to(dev)
        opt = build_optimizer(model, config.lr, config.lr_predictor, config.weight_decay, larc=larc)
        scaler = grad_scaler(dtype, dev)
        batch = synthetic_batch(config.batch_size, dev)
        step = lambda: train_step(model, opt, scaler, [batch], config.terms, dtype, dev)  # noqa: E731
        timed(step, 3 if cuda else 1, cuda)                  # warm-up: allocations, cuDNN autotuning
        times = timed(step, steps, cuda)
        median = statistics.median(times)
        emit({"what": "train_step", "device": str(dev), "autocast": str(dtype), "larc": larc,
              "batch_size": config.batch_size, "median_s": round(median, 4), "min_s": round(min(times), 4),
              "clips_per_s": round(config.batch_size / median, 1), "steps": steps,
              **({"peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated(dev) / 2**30, 1)} if cuda else {})})
        larc_rows(model, opt, cuda)
    if shards:
        with tempfile.TemporaryDirectory() as out:
            result = train(preset_config("tiny-cpu", shards=shards, out=out, batch_size=batch_size, device=device,
                                         amp=amp), progress=False)
        emit({"what": "tiny-cpu run (loader included)", "steps": result.steps, "seconds": round(result.seconds, 1),
              "s_per_step": round(result.seconds / result.steps, 2),
              "clips_per_s": round(result.clips / result.seconds, 2)})


def larc_rows(model, opt, sync: bool, repeats: int = 20) -> None:
    """LARC's gradient scaling of every group: the foreach kernels and the loop, on the same model."""
    from crisscross.optim import LARC

    if not isinstance(opt, LARC):
        return
    grads = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]

    def restore() -> None:                           # both versions scale the same gradients
        for p, g in zip(model.parameters(), grads):
            if g is not None:
                p.grad.copy_(g)

    def foreach() -> None:
        restore()
        for group in opt.param_groups:
            opt._scale_gradients(group, group["weight_decay"])

    def loop() -> None:
        restore()
        loop_larc_scaling(opt.param_groups, opt.trust_coefficient, opt.eps)

    timed(restore, repeats, sync)
    base = statistics.median(timed(restore, repeats, sync))
    rows = {name: statistics.median(timed(fn, repeats, sync)) - base for name, fn in (("foreach", foreach), ("loop", loop))}
    emit({"what": "LARC gradient scaling", "tensors": sum(1 for g in grads if g is not None),
          "foreach_ms": round(1000 * rows["foreach"], 2), "loop_ms": round(1000 * rows["loop"], 2),
          "loop_over_foreach": round(rows["loop"] / rows["foreach"], 1) if rows["foreach"] > 0 else None})


if __name__ == "__main__":
    main()
