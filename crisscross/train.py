"""The pretraining loop: Adam in four groups (optionally LARC), warm-up + cosine per iteration,
AMP on GPU, DDP through torchrun, gradient accumulation, exact resume, logs and a NaN guard.

``train(config)`` is the one entry point (``crisscross train``, in :mod:`crisscross.train_cli`,
calls it) and the config's last stop: everything below it takes plain values (the model, loss,
optimiser, loader and probes never see the config object). Ranks, device, AMP and synchronised
batch norm come from :mod:`crisscross.runtime`; the probes from :mod:`crisscross.training_probe`.

Under torchrun (``WORLD_SIZE`` > 1) every rank runs this same loop on its share of the data;
``config.batch_size`` is the global batch of one optimiser step, so each rank's micro-batch is
``batch_size / (world_size * accumulate)``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import torch
import torch.distributed as dist
from tqdm import tqdm

from crisscross.checkpoint import (CHECKPOINT_NAME, describe_choices, load_checkpoint, model_choices,
                                   resolve_resume, rng_state, save_checkpoint, set_rng_state)
from crisscross.config import TrainConfig
from crisscross.losses import pair_losses, resolve_terms
from crisscross.models import build_crisscross
from crisscross.monitor import RunLog, check_finite, collapse_std
from crisscross.optim import apply_lr, build_optimizer
from crisscross.runtime import amp_dtype, convert_sync_bn, pick_device, setup_distributed, wrap_ddp
from crisscross.training_probe import probe_due, resolve_modality, run_probes

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


# --- one step -----------------------------------------------------------------------------------
def views_needed(terms: tuple[str, ...]) -> set[str]:
    """The views some enabled pair term compares; the others are not computed (uni-modal ablations)."""
    return {pair[i:i + 2] for pair in resolve_terms(terms) for i in (0, 2)}


def one_modality(terms: tuple[str, ...]) -> bool:
    """Whether the enabled terms compare views of one modality only (the other gets no gradient)."""
    return len({v[0] for v in views_needed(terms)}) < 2


def loss_terms(out: dict[str, torch.Tensor], terms: tuple[str, ...]) -> tuple[torch.Tensor, dict]:
    """The training loss (mean of the enabled pair terms) and each pair term."""
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
def make_loader(shards: str, micro_batch: int, *, workers: int, mode: str, backend: str, seed: int,
                epoch_size: int | None, device: torch.device, rank: int, world: int,
                video_aug: tuple[str, ...] | None = None, audio_aug: tuple[str, ...] | None = None,
                temporal_consistency: str | None = None):
    """The training loader of this rank (``micro_batch`` clips per batch)."""
    from crisscross.data.loader import make_train_loader   # here: keeps torchvision off `crisscross --help`

    return make_train_loader(shards, batch_size=micro_batch, num_workers=workers, mode=mode, backend=backend,
                             device=str(device), seed=seed, epoch_size=epoch_size,
                             rank=rank if world > 1 else None, world_size=world if world > 1 else None,
                             video_augs=video_aug, audio_augs=audio_aug, temporal_consistency=temporal_consistency)


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


def restore(path: Path, model, optimizer, scaler, loader, rank: int, device: torch.device,
            choices: dict) -> tuple[int, int, int, dict]:
    """Load everything a checkpoint holds into the run's objects; (step, epoch, skipped clips, its config).
    ``choices``: the run's :func:`crisscross.checkpoint.model_choices`, which the checkpoint's must equal."""
    state = load_checkpoint(path, map_location=device)
    saved = model_choices(state.get("config", {}))
    if saved != choices:
        raise ValueError(f"{path} holds a different network ({describe_choices(saved)}) than this run's "
                         f"({describe_choices(choices)}); resume with the checkpoint's options or use another --out")
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


def build_model(config: TrainConfig, world: int, device: torch.device) -> torch.nn.Module:
    """The network ``config`` names (``model``, ``projector_layers``, ``predictor``) on ``device``, the
    same initial weights on every rank; under DDP (``world`` > 1) its batch norms synchronised across
    ranks unless ``sync_bn`` is off (on by default, as the official code)."""
    torch.manual_seed(config.seed)
    model = build_crisscross(config.model, config.projector_layers, config.predictor).to(device)
    return convert_sync_bn(model, device) if config.sync_bn and world > 1 else model


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
    rank, world, local = setup_distributed(config.device)
    device = pick_device(config.device, local)
    dtype = amp_dtype(config.amp, device)
    if config.batch_size % (world * config.accumulate):
        raise ValueError(f"batch size {config.batch_size} must be a multiple of world size x accumulate "
                         f"({world} x {config.accumulate})")
    micro = config.batch_size // (world * config.accumulate)

    model = build_model(config, world, device)
    optimizer = build_optimizer(model, base_lr=config.lr, predictor_lr=config.lr_predictor,
                                weight_decay=config.weight_decay, betas=tuple(config.betas),
                                larc=config.larc, trust_coefficient=config.larc_trust)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    loader = make_loader(config.shards, micro, workers=config.workers, mode=config.mode, backend=config.backend,
                         seed=config.seed, epoch_size=config.epoch_size, device=device, rank=rank, world=world,
                         video_aug=config.video_aug, audio_aug=config.audio_aug,
                         temporal_consistency=config.temporal_consistency)
    probes = {u: resolve_modality(u, config.probe_modality) for u in config.probe} if rank == 0 else {}
    steps_per_epoch = max(1, len(loader) // config.accumulate)
    total = config.steps or config.epochs * steps_per_epoch
    warmup = min(total, round(config.warmup_epochs * steps_per_epoch))

    step, epoch, counts = 0, 0, {"skipped_no_audio": 0}  # counts: of finished epochs
    path = resolve_resume(resume, config.out)
    if path is not None:
        step, epoch, counts["skipped_no_audio"], saved = restore(path, model, optimizer, scaler, loader, rank, device,
                                                                 model_choices(config.to_dict()))
        changed = changed_settings(saved, config)
        if changed and rank == 0:
            click.echo(f"resuming {path} with different {', '.join(changed)}: the run continues, but not "
                       "as the checkpoint's run would have (same options give an exact resume)", err=True)
    net = wrap_ddp(model, device, one_modality(config.terms)) if world > 1 else model

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
                row.update(run_probes(model, probes, train_clips=config.probe_train_clips,
                                      test_clips=config.probe_test_clips, device=str(device), seed=config.seed,
                                      rank=rank, world=world, epoch=epoch, step=step))
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
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
