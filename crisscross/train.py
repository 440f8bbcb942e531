"""The pretraining loop: Adam in four groups (optionally LARC), warm-up + cosine per iteration,
AMP on GPU, DDP through torchrun, gradient accumulation, exact resume, logs and a NaN guard.

``train(config)`` is the one entry point (``crisscross train`` calls it). Everything below it
takes plain values: the model, loss, optimiser helpers and loader never see the config object.

Under torchrun (``WORLD_SIZE`` > 1) every rank runs this same loop on its share of the data;
``config.batch_size`` is the global batch of one optimiser step, so each rank's micro-batch is
``batch_size / (world_size * accumulate)``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import torch
import torch.distributed as dist

from crisscross.checkpoint import (CHECKPOINT_NAME, load_checkpoint, resolve_resume, rng_state,
                                   save_checkpoint, set_rng_state)
from crisscross.config import AMP_CHOICES, PRESETS, PROBE_MODALITIES, TrainConfig, describe_presets, preset_config
from crisscross.data.views import MODES
from crisscross.monitor import RunLog, TrainingDiverged, check_finite, collapse_std
from crisscross.probe import probe_accuracy, probe_due, probe_name, resolve_modality

VIEWS = ("v1", "v2", "a1", "a2")


@dataclass
class TrainResult:
    """What a run did, for the summary line and for callers (tests, tools)."""

    steps: int                     # optimiser steps done in total (including resumed ones)
    clips: int                     # clips seen by all ranks during this call
    seconds: float                 # training time, probes excluded
    loss: float
    skipped_no_audio: int
    checkpoint: Path | None
    history: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.clips / self.seconds if self.seconds else 0.0
        where = f"; checkpoint {self.checkpoint}" if self.checkpoint else ""
        return (f"trained to step {self.steps}: {self.clips} clips in {self.seconds:.1f} s "
                f"({rate:.2f} clips/s), final loss {self.loss:.4f}, skipped {self.skipped_no_audio} "
                f"clips without audio{where}")


# --- distributed / device / precision -----------------------------------------------------------
def setup_distributed(device: str) -> tuple[int, int, int]:
    """(rank, world_size, local_rank); joins the process group that torchrun describes in the
    environment (nccl on GPU, gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's GPU when there is one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is visible; use --device cpu")
    return torch.device(device)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision (always on CPU: AMP is a GPU feature here)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


class CpuSyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all ranks, for CPU processes (gloo): torch's
    SyncBatchNorm has CUDA kernels only (and DDP refuses it on CPU). The per-channel sum, sum of
    squares and count are all-reduced with autograd, so outputs, gradients and running statistics
    equal batch norm on the concatenated batch. Same parameters and buffers as BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c, dims = x.size(1), [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() // c, dtype=x.dtype)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean          # biased, as batch norm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * n / (n - 1), m)   # unbiased, as batch norm keeps
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def convert_sync_bn(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every BatchNorm of ``module`` synchronised across ranks: torch's SyncBatchNorm on GPUs,
    :class:`CpuSyncBatchNorm` on CPU (state dicts unchanged, so checkpoints interchange)."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        synced = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_sync_bn(child, device))
    return module


# --- one step -----------------------------------------------------------------------------------
def views_needed(terms: tuple[str, ...]) -> set[str]:
    """The views some enabled pair term compares; the others are not computed (uni-modal ablations)."""
    from crisscross.losses import resolve_terms

    return {pair[i:i + 2] for pair in resolve_terms(terms) for i in (0, 2)}


def loss_terms(out: dict[str, torch.Tensor], terms: tuple[str, ...]) -> tuple[torch.Tensor, dict]:
    """The training loss (mean of the enabled pair terms) and each pair term."""
    from crisscross.losses import pair_losses

    pairs = pair_losses(out, terms)
    return torch.stack(list(pairs.values())).mean(), pairs


def train_step(model, optimizer, scaler, micro_batches: list[dict], terms: tuple[str, ...],
               dtype: torch.dtype | None, device: torch.device) -> dict[str, float]:
    """Forward/backward over the micro-batches (gradients accumulated, DDP syncing only on the
    last), then one optimiser step. Returns loss, its pair terms and the collapse stds."""
    optimizer.zero_grad(set_to_none=True)
    n, needed = len(micro_batches), views_needed(terms)
    total, parts, stds = 0.0, {}, {}
    for i, batch in enumerate(micro_batches):
        views = [batch[k].to(device, non_blocking=True) if k in needed else None for k in VIEWS]
        sync = contextlib.nullcontext() if i == n - 1 or not hasattr(model, "no_sync") else model.no_sync()
        autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                    else contextlib.nullcontext())
        with sync:
            with autocast:
                out = model(*views)
                loss, pairs = loss_terms(out, terms)
            scaled = loss / n
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.item() / n
        for k, v in pairs.items():
            parts[f"loss/{k}"] = parts.get(f"loss/{k}", 0.0) + v.item() / n
        stds = {f"std/{m}": collapse_std(out[z]) for m, z in (("video", "zv1"), ("audio", "za1")) if z in out}
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    elif math.isfinite(total):  # never apply a NaN step; the guard stops the run right after
        optimizer.step()
    return {"loss": total, **parts, **stds}


# --- the loop -----------------------------------------------------------------------------------
def make_loader(config: TrainConfig, micro_batch: int, device: torch.device, rank: int, world: int):
    """The training loader of this rank, from the config's data options."""
    from crisscross.data.loader import make_train_loader

    return make_train_loader(config.shards, batch_size=micro_batch, num_workers=config.workers,
                             mode=config.mode, backend=config.backend, device=str(device),
                             seed=config.seed, epoch_size=config.epoch_size,
                             rank=rank if world > 1 else None, world_size=world if world > 1 else None)


def epochs_of(loader, start_epoch: int, counts: dict[str, int]):
    """Endless (epoch, batch) pairs over successive epochs (the loader advances its epoch at the
    end of a pass, so a resumed mid-epoch position is kept). Adds each finished epoch's clips
    skipped without audio to ``counts["skipped_no_audio"]``."""
    epoch = start_epoch
    while True:
        loader.set_epoch(epoch)  # no-op when the loader is already in it (fresh or resumed)
        for batch in loader:
            yield epoch, batch
        counts["skipped_no_audio"] += skipped_no_audio(loader)
        epoch += 1


def skipped_no_audio(loader) -> int:
    """Clips the loader skipped in its current (or just finished) epoch because they have no audio."""
    return int(loader.stats.get("skipped_no_audio", 0))


def restore(path: Path, model, optimizer, scaler, loader, rank: int,
            device: torch.device) -> tuple[int, int, int, dict]:
    """Load everything a checkpoint holds into the run's objects; (step, epoch, skipped clips, its config)."""
    state = load_checkpoint(path, map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    resume_loader(loader, state["loaders"], rank)
    set_rng_state(state["rng"])
    return state["step"], loader.epoch, state.get("skipped_no_audio", 0), state.get("config", {})


SCHEDULE_KEYS = ("batch_size", "epoch_size", "epochs", "steps", "lr", "lr_end", "lr_predictor", "warmup_epochs",
                 "accumulate", "terms", "mode", "seed", "larc")


def changed_settings(saved: dict, config: TrainConfig) -> list[str]:
    """The options that shape the run's trajectory and differ from the checkpoint's ("--lr 0.001 -> 0.002")."""
    now = config.to_dict()
    return [f"--{k.replace('_', '-')} {saved[k]} -> {now[k]}" for k in SCHEDULE_KEYS
            if k in saved and saved[k] != now[k]]


def resume_loader(loader, saved: list[dict], rank: int) -> None:
    """Put the loader where the checkpoint's ranks were (the rule of docs/multinode.md).

    Same world size and workers: each rank continues right after its last batch. Otherwise the
    data restarts at the first epoch the checkpoint had not started: its epoch if no batch of it
    was consumed, else the next one (epoch e holds the same clips whatever the world size)."""
    mine, theirs = loader.state_dict()["stream"], [s["stream"] for s in saved]
    if len(theirs) == mine["world_size"] and theirs[0]["num_workers"] == mine["num_workers"]:
        loader.load_state_dict(saved[rank])
        return
    started = any(tuple(p) != (0, 0) for s in theirs for p in s["positions"])
    loader.set_epoch(theirs[0]["epoch"] + started)
    if rank == 0:
        click.echo(f"resuming {len(theirs)} rank(s) x {theirs[0]['num_workers']} worker(s) on "
                   f"{mine['world_size']} x {mine['num_workers']}: the data restarts at epoch {loader.epoch} "
                   "(docs/multinode.md)", err=True)


def probe_now(model: torch.nn.Module, probes: dict[str, str], config: TrainConfig, device: torch.device,
              rank: int, world: int, epoch: int, step: int) -> dict[str, float]:
    """Rank 0 runs the linear probe of every ``probes`` url (-> modality) on ``model``'s current
    backbones and prints each accuracy; the other ranks wait at a barrier. {"probe/NAME": top-1}."""
    from tqdm import tqdm

    from crisscross.eval.errors import EvalError

    out = {}
    for url, modality in probes.items() if rank == 0 else ():
        name = probe_name(url)
        try:
            out[name] = probe_accuracy(model, url, modality, config.probe_train_clips, config.probe_test_clips,
                                       device, config.seed)
        except EvalError as e:   # a probe set the protocol cannot use must not end the training
            click.echo(f"{name} skipped at step {step}: {e}", err=True)
            continue
        tqdm.write(f"{name} ({modality}): top-1 {out[name]:.1%} after epoch {epoch + 1} (step {step})")
    if world > 1:
        dist.barrier()
    return out


def wrap_ddp(model: torch.nn.Module, device: torch.device, terms: tuple[str, ...]) -> torch.nn.Module:
    """DistributedDataParallel; uni-modal term sets leave the other modality without gradients."""
    unused = len({v[0] for v in views_needed(terms)}) < 2
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused)


def train(config: TrainConfig, resume: str | None = None, stop_after: int | None = None,
          progress: bool = True, deterministic: bool = False) -> TrainResult:
    """Pretrain CrissCross as ``config`` says; write checkpoints and logs to ``config.out``.

    ``resume``: a checkpoint path, a run folder, or "auto" (the latest in ``config.out``, if any).
    ``stop_after``: stop (with a checkpoint) once this many optimiser steps are done in total,
    e.g. to fit a job's time limit; ``--resume auto`` later continues exactly.
    ``deterministic``: torch.use_deterministic_algorithms, for bit-exact resume checks.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic or previous)
    try:
        return _train(config, resume, stop_after, progress)
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(config: TrainConfig, resume: str | None, stop_after: int | None, progress: bool) -> TrainResult:
    from crisscross.models import build_crisscross
    from crisscross.optim import apply_lr, build_optimizer

    rank, world, local = setup_distributed(config.device)
    device = pick_device(config.device, local)
    dtype = amp_dtype(config.amp, device)
    if config.batch_size % (world * config.accumulate):
        raise ValueError(f"batch size {config.batch_size} must be a multiple of world size x accumulate "
                         f"({world} x {config.accumulate})")
    micro = config.batch_size // (world * config.accumulate)

    torch.manual_seed(config.seed)  # same initial weights on every rank
    model = build_crisscross(projector_layers=config.projector_layers).to(device)
    if config.sync_bn and world > 1:
        model = convert_sync_bn(model, device)
    optimizer = build_optimizer(model, base_lr=config.lr, predictor_lr=config.lr_predictor,
                                weight_decay=config.weight_decay, betas=tuple(config.betas),
                                larc=config.larc, trust_coefficient=config.larc_trust)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    loader = make_loader(config, micro, device, rank, world)
    probes = {u: resolve_modality(u, config.probe_modality) for u in config.probe} if rank == 0 else {}
    steps_per_epoch = max(1, len(loader) // config.accumulate)
    total = config.steps or config.epochs * steps_per_epoch
    warmup = min(total, round(config.warmup_epochs * steps_per_epoch))

    step, epoch, counts = 0, 0, {"skipped_no_audio": 0}  # counts: of finished epochs
    path = resolve_resume(resume, config.out)
    if path is not None:
        step, epoch, counts["skipped_no_audio"], saved = restore(path, model, optimizer, scaler, loader, rank, device)
        changed = changed_settings(saved, config)
        if changed and rank == 0:
            click.echo(f"resuming {path} with different {', '.join(changed)}: the run continues, but not "
                       "as the checkpoint's run would have (same options give an exact resume)", err=True)
    net = wrap_ddp(model, device, config.terms) if world > 1 else model

    def checkpoint() -> Path | None:
        """Collective under DDP (every rank's loader position is kept); rank 0 writes."""
        loaders = [loader.state_dict()]
        if world > 1:
            loaders = [None] * world
            dist.all_gather_object(loaders, loader.state_dict())
        if rank != 0:
            return None
        return save_checkpoint(Path(config.out) / CHECKPOINT_NAME, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "step": step, "epoch": epoch,
            "loaders": loaders, "rng": rng_state(), "config": config.to_dict(),
            "skipped_no_audio": counts["skipped_no_audio"]})

    log = RunLog(config.out, resume_step=step) if rank == 0 else None
    end = min(total, stop_after) if stop_after else total
    bar = _progress(progress and rank == 0, total, step)
    result = TrainResult(step, 0, 0.0, math.nan, 0, None)
    start, probe_seconds = time.perf_counter(), 0.0
    batches = epochs_of(loader, epoch, counts)
    net.train()
    try:
        while step < end:
            lr = apply_lr(optimizer, step, total, warmup, config.lr, config.lr_end)
            micro_batches = []
            for _ in range(config.accumulate):
                epoch, batch = next(batches)
                micro_batches.append(batch)
            metrics = train_step(net, optimizer, scaler, micro_batches, config.terms, dtype, device)
            if world > 1:  # the mean over ranks: logs and the NaN guard agree everywhere
                loss = torch.tensor(metrics["loss"], device=device)
                dist.all_reduce(loss)
                metrics["loss"] = loss.item() / world
            check_finite(metrics["loss"], step + 1, lr, config.amp)
            step += 1
            result.clips += config.batch_size
            result.loss = metrics["loss"]
            rate = result.clips / (time.perf_counter() - start - probe_seconds)   # training throughput
            row = {**metrics, "lr/backbone": lr, "lr/predictor": config.lr_predictor, "clips_per_s": rate,
                   "epoch": epoch}
            probed = bool(config.probe) and probe_due(step, steps_per_epoch, config.probe_every, total)
            if probed:   # before the checkpoint: a resume from it never misses this epoch's probe
                probe_start = time.perf_counter()
                row.update(probe_now(model, probes, config, device, rank, world, epoch, step))
                probe_seconds += time.perf_counter() - probe_start
            result.history.append({"step": step, **row})
            if log is not None and (step % config.log_every == 0 or step == end or probed):
                log.log(step, row)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}", clips_s=f"{rate:.1f}")
            bar.update(1)
            if step % config.checkpoint_every == 0 and step < end:
                checkpoint()
    finally:
        bar.close()
        result.seconds = time.perf_counter() - start - probe_seconds
        result.steps = step
        result.skipped_no_audio = counts["skipped_no_audio"] + skipped_no_audio(loader)
        if log is not None:
            log.close()
    result.checkpoint = checkpoint()  # always one at the end, so --resume auto finds it
    if world > 1:
        dist.barrier()
    return result


def _progress(enabled: bool, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


# --- command line -------------------------------------------------------------------------------
TRAIN_HELP = f"""Pretrain CrissCross on the clips of SHARDS (avshards shards: a local folder, a brace
pattern, or an http(s):// / s3:// URL).

\b
Examples:
  crisscross train shards/ --preset tiny-cpu --out runs/tiny            # minutes on a laptop CPU
  crisscross train shards/ --preset kinetics-sound --out runs/ks --workers 10
  torchrun --nproc_per_node 8 --no-python crisscross train s3://bucket/ks/ \\
      --preset kinetics-sound --out runs/ks --sync-bn                   # 8 GPUs, DDP
  crisscross train shards/ --out runs/ks --resume auto                  # continue exactly
  crisscross train shards/ --terms sync,intra --out runs/ablation       # a Table 1 row

\b
Presets (paper Table S10, and ours for CPUs); options override them:
{describe_presets()}

--batch-size is the global batch of one optimiser step (all GPUs, all accumulated micro-batches).
The run folder gets checkpoint.pt (every --checkpoint-every steps and at the end), log.csv,
tb/ (TensorBoard) and loss.png. Clips without audio are skipped and counted in the summary."""


def _split_terms(ctx, param, value):  # noqa: ANN001 - click callback
    return tuple(t.strip() for t in value.replace("+", ",").split(",") if t.strip()) if value else None


@click.command("train", help=TRAIN_HELP)
@click.argument("shards")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="tiny-cpu", show_default=True,
              help="Starting values (see the table above); every option below overrides one.")
@click.option("--out", default="runs/crisscross", show_default=True,
              help="Run folder: checkpoint.pt, log.csv, tb/, loss.png.")
@click.option("--steps", type=int, help="Total optimiser steps (overrides --epochs).")
@click.option("--epochs", type=int, help="Epochs of --epoch-size clips each.")
@click.option("--epoch-size", type=int, help="Clips per epoch; 0 = every clip of SHARDS once.")
@click.option("--batch-size", type=int, help="Global batch per optimiser step.")
@click.option("--lr", type=float, help="Backbone + projector LR after warm-up (cosine from there).")
@click.option("--lr-end", type=float, help="Backbone LR at the end of the cosine.")
@click.option("--lr-predictor", type=float, help="Constant predictor LR (paper: 10x --lr).")
@click.option("--weight-decay", type=float, help="Adam weight decay.")
@click.option("--warmup-epochs", type=float, help="Linear warm-up length in epochs (per-iteration).")
@click.option("--larc/--no-larc", default=None, help="Wrap Adam in LARC (clip mode), for large batches.")
@click.option("--accumulate", type=int, help="Micro-batches per optimiser step (gradient accumulation).")
@click.option("--terms", callback=_split_terms,
              help="Loss terms, comma-separated groups (intra, sync, async) and/or pairs "
                   "(v1v2, a1a2, v1a1, v2a2, v1a2, a1v2). Default: intra,sync,async.")
@click.option("--mode", type=click.Choice(MODES), help="Relaxation of the two views in time (default mild).")
@click.option("--backend", type=click.Choice(["torch", "dali"]), help="Augmentation backend (default torch).")
@click.option("--device", help="cpu, cuda, cuda:N or auto (default: the preset's).")
@click.option("--amp", type=click.Choice(AMP_CHOICES), help="Mixed precision on GPU (auto: bf16 if supported).")
@click.option("--sync-bn", is_flag=True, default=None, help="SyncBatchNorm across ranks under torchrun.")
@click.option("--workers", type=int, help="DataLoader worker processes per rank.")
@click.option("--seed", type=int, help="Seed of weights, view sampling and augmentation.")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints (plus one at the end).")
@click.option("--log-every", type=int, help="Steps between log.csv / TensorBoard rows.")
@click.option("--probe", multiple=True,
              help="Labelled shards (train/test json splits, e.g. from avshards build --dataset) for a "
                   "linear-SVM probe of the current backbones at epoch ends, logged as probe/NAME; repeatable.")
@click.option("--probe-every", type=int, help="Epochs between probes (default 1; one more at the end).")
@click.option("--probe-modality", type=click.Choice(PROBE_MODALITIES),
              help="Backbone the probe evaluates (default auto: video if the shards have frames, else audio).")
@click.option("--probe-train-clips", type=int, help="Clips per training video in the probe (default 2).")
@click.option("--probe-test-clips", type=int, help="Clips per test video in the probe (default 1).")
@click.option("--resume", help="Continue from a checkpoint file, a run folder, or 'auto' (the latest in --out).")
@click.option("--stop-after", type=int, help="Stop with a checkpoint once this many steps are done "
                                              "(e.g. a job time limit); resume later with --resume auto.")
@click.option("--deterministic", is_flag=True, help="Use deterministic algorithms only (slower; bit-exact reruns).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(shards: str, preset: str, resume: str | None, stop_after: int | None,
                  deterministic: bool, quiet: bool, epoch_size: int | None, **overrides) -> None:
    """`crisscross train` (help text in TRAIN_HELP)."""
    try:
        config = preset_config(preset, shards=shards, epoch_size=epoch_size or None, **overrides)
        if epoch_size == 0:
            config.epoch_size = None
        result = train(config, resume=resume, stop_after=stop_after, progress=not quiet,
                       deterministic=deterministic)
    # User-fixable (bad path or option, unreachable shards, DALI missing, divergence): the message says how.
    except (TrainingDiverged, ValueError, OSError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    if result.checkpoint is not None:  # rank 0 only
        click.echo(result.summary())
