"""The pretraining loop: Adam in four groups (optionally LARC), warm-up + cosine per iteration,
AMP on GPU, DDP through torchrun, gradient accumulation, exact and elastic resume, logs and a NaN
guard.

``train(config)`` is the one entry point (``crisscross train``, in :mod:`crisscross.train_cli`,
calls it) and the config's last stop: everything below it takes plain values (the model, loss,
optimiser, loader and probes never see the config object). Ranks, device, kernels, AMP and
synchronised batch norm come from :mod:`crisscross.runtime`; the probes from
:mod:`crisscross.training_probe`.

Under torchrun (``WORLD_SIZE`` > 1) every rank runs this same loop on its share of the data;
``config.batch_size`` is the global batch of one optimiser step, so each rank's micro-batch is
``batch_size / (world_size * accumulate)``.

The step never waits on the host: its metrics (loss, pair terms, collapse stds, skipped fp16
steps) stay on the device and are copied to the host in one transfer at each log row, checkpoint,
probe and at the end (:func:`host_rows`), which is also where the NaN guard looks at them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import torch
import torch.distributed as dist
from tqdm import tqdm

from avshards.stream import DEFAULT_MAX_LOST, merge_states
from crisscross.checkpoint import (CHECKPOINT_NAME, describe_choices, load_checkpoint, model_choices,
                                   resolve_resume, rng_state, save_checkpoint, set_rng_state)
from crisscross.config import TrainConfig
from crisscross.losses import pair_losses, resolve_terms
from crisscross.models import build_crisscross
from crisscross.monitor import RunLog, check_finite, check_finite_weights, collapse_std
from crisscross.optim import apply_lr, build_optimizer
from crisscross.runtime import (amp_dtype, convert_sync_bn, grad_scaler, kernel_policy, pick_device,
                                setup_distributed, skipped_step, wrap_ddp)
from crisscross.training_probe import PROBE_TIMEOUT, probe_due, resolve_modality, run_probes

VIEWS = ("v1", "v2", "a1", "a2")
# The loader's per-epoch counts a run reports (TrainLoader.stats keys), and where log.csv shows them.
COUNTED = ("skipped_no_audio", "lost", "substituted")
EMPTY_EPOCHS = 3                       # empty epochs in a row that stop a run (no clip with audio)
SKIPPED_STEPS = "amp/skipped_steps"     # optimiser steps the fp16 grad scaler skipped, in the whole run
logger = logging.getLogger("crisscross.train")


@dataclass
class TrainResult:
    """What a run did, for the summary line and for callers (tests, tools). The clip counts are
    the whole run's (resumed epochs included), summed over ranks."""

    steps: int                     # optimiser steps done in total (including resumed ones)
    clips: int                     # clips seen by all ranks during this call
    seconds: float                 # training time, probes excluded
    loss: float
    skipped_no_audio: int
    checkpoint: Path | None
    lost: int = 0                  # clips lost to unreadable shards
    substituted: int = 0           # clips read twice to make up for skipped or lost ones
    skipped_steps: int = 0         # optimiser steps the fp16 grad scaler skipped (inf/NaN gradients)
    history: list[dict] = field(default_factory=list)    # one row per step

    def summary(self) -> str:
        rate = self.clips / self.seconds if self.seconds else 0.0
        where = f"; checkpoint {self.checkpoint}" if self.checkpoint else ""
        steps = f", {self.skipped_steps} step(s) skipped by the fp16 grad scaler" if self.skipped_steps else ""
        return (f"trained to step {self.steps}: {self.clips} clips in {self.seconds:.1f} s "
                f"({rate:.2f} clips/s), final loss {self.loss:.4f}, skipped {self.skipped_no_audio} "
                f"clips without audio, lost {self.lost} to unreadable shards ({self.substituted} read twice "
                f"to keep the ranks equal){steps}{where}")


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
               dtype: torch.dtype | None, device: torch.device, host_sees: bool = False) -> dict[str, torch.Tensor]:
    """Forward/backward over the micro-batches (gradients accumulated, DDP syncing only on the
    last), then one optimiser step. Returns the loss, its pair terms, the collapse stds and (with a
    grad scaler) whether the step was skipped, as 0-d tensors on the device: nothing here waits on
    the host, except with ``host_sees`` (a log row or checkpoint follows this step, so its loss is
    copied to the host anyway): then a non-finite step is not applied, and the weights stay those of
    the last finite step. Between log rows a non-finite step is applied; the NaN guard finds it at
    the next copy, before any checkpoint (docs/training.md)."""
    optimizer.zero_grad(set_to_none=True)
    n, needed = len(micro_batches), views_needed(terms)
    losses, parts = [], {}
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
        losses.append(loss.detach())
        for k, v in pairs.items():
            parts.setdefault(f"loss/{k}", []).append(v.detach())
    metrics = {"loss": torch.stack(losses).mean(), **{k: torch.stack(v).mean() for k, v in parts.items()},
               **{f"std/{m}": collapse_std(out[z]) for m, z in (("video", "zv1"), ("audio", "za1")) if z in out}}
    if scaler is not None:
        scaler.step(optimizer)
        metrics["amp/skipped"] = skipped_step(scaler, optimizer)
        scaler.update()
    elif not host_sees or torch.isfinite(metrics["loss"]):
        optimizer.step()
    return metrics


def host_rows(metrics: list[dict[str, torch.Tensor]], counts: list[int],
              world: int) -> tuple[list[dict[str, float]], list[int]]:
    """The metrics of the steps since the last copy, and ``counts`` (host integers), on the host
    in one device-to-host transfer: under DDP the metrics are averaged and the counts summed over
    the ranks in one all-reduce first (every rank calls this at the same steps)."""
    keys = list(metrics[0])
    # float64: exact counts whatever the run's length, and one dtype for bf16 / fp32 metrics
    values = torch.stack([torch.stack([m[k].double() for k in keys]) for m in metrics]).flatten()
    if world > 1:
        values = torch.cat([values, torch.tensor(counts, dtype=values.dtype, device=values.device)])
        dist.all_reduce(values)
    host = values.tolist()
    n = len(metrics) * len(keys)
    if world > 1:
        counts = [round(c) for c in host[n:]]
        host = [v / world for v in host[:n]]
    return [dict(zip(keys, host[i:i + len(keys)])) for i in range(0, n, len(keys))], counts


# --- the loop -----------------------------------------------------------------------------------
def make_loader(shards: str, micro_batch: int, *, workers: int, mode: str, backend: str, seed: int,
                epoch_size: int | None, max_lost: float | int | None, device: torch.device, rank: int, world: int,
                video_aug: tuple[str, ...] | None = None, audio_aug: tuple[str, ...] | None = None,
                temporal_consistency: str | None = None):
    """The training loader of this rank (``micro_batch`` clips per batch)."""
    from crisscross.data.loader import make_train_loader   # here: keeps torchvision off `crisscross --help`

    return make_train_loader(shards, batch_size=micro_batch, num_workers=workers, mode=mode, backend=backend,
                             device=str(device), seed=seed, epoch_size=epoch_size,
                             max_lost=DEFAULT_MAX_LOST if max_lost is None else max_lost,
                             rank=rank if world > 1 else None, world_size=world if world > 1 else None,
                             video_augs=video_aug, audio_augs=audio_aug, temporal_consistency=temporal_consistency)


class EmptyEpoch(RuntimeError):
    """An epoch gave no batch at all: every clip of it was lost or skipped."""


def epochs_of(loader, start_epoch: int, finished: dict[str, int]):
    """Endless (epoch, batch) pairs over successive epochs (the loader advances its epoch at the
    end of a pass, so a resumed mid-epoch position is kept). Adds each finished epoch's counts
    (:data:`COUNTED`) to ``finished``; raises :class:`EmptyEpoch` for an epoch without a batch that
    lost clips (with ``--max-lost 1.0`` an unreadable set would otherwise loop over empty epochs
    forever), or after :data:`EMPTY_EPOCHS` empty epochs in a row (a set without audio). One epoch
    emptied by clips without audio goes on (a small ``--epoch-size`` can fall on them); the first
    epoch is exempt: a resumed one may have nothing left on the new layout."""
    epoch, empty_in_a_row = start_epoch, 0
    while True:
        loader.set_epoch(epoch)  # no-op when the loader is already in it (fresh or resumed)
        batches = 0
        for batch in loader:
            batches += 1
            yield epoch, batch
        counts = finished_epoch_counts(loader)
        empty_in_a_row = 0 if batches or epoch == start_epoch else empty_in_a_row + 1
        if empty_in_a_row and (counts["lost"] or empty_in_a_row >= EMPTY_EPOCHS):
            raise EmptyEpoch(f"epoch {epoch} gave no batch: its clips were lost to unreadable shards "
                             f"({counts['lost']}) or skipped ({counts['skipped_no_audio']} without audio); check the "
                             "shards with avshards verify and rebuild or re-upload the damaged ones.")
        for key, value in counts.items():
            finished[key] += value
        epoch += 1


def finished_epoch_counts(loader) -> dict[str, int]:
    """:data:`COUNTED` of the epoch the loader just finished, every worker's last message included
    (the stream's ``skipped`` is the training loader's ``skipped_no_audio``)."""
    stats = loader.batches.last_epoch_stats
    return {"skipped_no_audio": stats.get("skipped", 0), "lost": stats.get("lost", 0),
            "substituted": stats.get("substituted", 0)}


def warn_if_clustered(url: str) -> None:
    """Warn once when the clips of ``url`` are sorted by label (a build without --shuffle). A
    diagnostic only: shards it cannot read are the stream's to count and report."""
    from avshards.inspect import order_report   # here: only rank 0 looks, once

    try:
        advice = order_report(url).advice
    except (OSError, ValueError) as err:
        logger.info("the order of %s could not be checked (%s: %s)", url, type(err).__name__, err)
        return
    if advice:
        click.echo(f"warning: {advice} Training goes on: the stream mixes chunks from all over each epoch, "
                   "which recovers most of a shuffle (docs/streaming.md#order-how-an-epoch-is-mixed).", err=True)


def restore(path: Path, model, optimizer, scaler, loader, rank: int,
            choices: dict) -> tuple[int, dict[str, int], int, dict]:
    """Load everything a checkpoint holds into the run's objects; (step, this rank's counts of
    finished epochs, steps the fp16 scaler skipped, the checkpoint's config). ``choices``: the run's
    :func:`crisscross.checkpoint.model_choices`, which the checkpoint's must equal.

    The checkpoint is read on the CPU whatever the device: ``load_state_dict`` moves the weights
    and Adam's moments to where their modules live (Adam's ``step`` counters stay on the CPU, as a
    non-capturable Adam wants them), and the RNG states stay CPU byte tensors as
    ``torch.set_rng_state`` requires."""
    state = load_checkpoint(path)
    saved = model_choices(state.get("config", {}))
    if saved != choices:
        raise ValueError(f"{path} holds a different network ({describe_choices(saved)}) than this run's "
                         f"({describe_choices(choices)}); resume with the checkpoint's options or use another --out")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    counts = resume_loader(loader, state["loaders"], rank, legacy_skipped=state.get("skipped_no_audio", 0))
    set_rng_state(state["rng"])
    return state["step"], counts, state.get("skipped_steps", 0), state.get("config", {})


SCHEDULE_KEYS = ("batch_size", "epoch_size", "epochs", "steps", "lr", "lr_end", "lr_predictor", "warmup_epochs",
                 "accumulate", "terms", "mode", "seed", "larc")


def changed_settings(saved: dict, config: TrainConfig) -> list[str]:
    """The options that shape the run's trajectory and differ from the checkpoint's ("--lr 0.001 -> 0.002")."""
    now = config.to_dict()
    return [f"--{k.replace('_', '-')} {saved[k]} -> {now[k]}" for k in SCHEDULE_KEYS
            if k in saved and saved[k] != now[k]]


def resume_loader(loader, saved: list[dict], rank: int, legacy_skipped: int = 0) -> dict[str, int]:
    """Put the loader where the checkpoint's ranks were (the rule of docs/multinode.md); return
    this rank's counts of the finished epochs.

    Same world size and workers: each rank continues right after its last batch. Another layout:
    the interrupted epoch goes on with the positions no rank had consumed, split over the new ranks
    and workers (avshards' elastic resume: every clip of the epoch once), and rank 0 takes over
    the finished epochs' counts of all the old ranks."""
    mine, theirs = loader.state_dict()["stream"], [s["stream"] for s in saved]
    counts = [s.get("counts", {"skipped_no_audio": legacy_skipped if i == 0 else 0}) for i, s in enumerate(saved)]
    same = len(theirs) == mine["world_size"] and theirs[0]["num_workers"] == mine["num_workers"]
    if same:   # each rank its own state: ranks may be in different epochs (a part without audio)
        loader.load_state_dict({"stream": theirs[rank], "mode": saved[rank]["mode"]})
        return {k: counts[rank].get(k, 0) for k in COUNTED}
    loader.load_state_dict({"stream": merge_states(theirs), "mode": saved[0]["mode"]})
    if rank == 0:
        click.echo(f"resuming epoch {loader.epoch} of a run on {len(theirs)} rank(s) x {theirs[0]['num_workers']} "
                   f"worker(s) on {mine['world_size']} x {mine['num_workers']}: the clips of the epoch not yet "
                   "read are split over the new layout (docs/multinode.md)", err=True)
    return {k: sum(c.get(k, 0) for c in counts) if rank == 0 else 0 for k in COUNTED}


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
    ``deterministic``: deterministic algorithms, for bit-exact resume checks (on CUDA the kernels
    that have no deterministic version warn; see :func:`crisscross.runtime.kernel_policy`).
    """
    # With probes, rank 0 evaluates while the others wait in a barrier: give them time.
    rank, world, local = setup_distributed(config.device, timeout=PROBE_TIMEOUT if config.probe else None)
    device = pick_device(config.device, local)
    with kernel_policy(device, deterministic):
        return _train(config, resume, stop_after, progress, rank, world, device)


def _train(config: TrainConfig, resume: str | None, stop_after: int | None, progress: bool,
           rank: int, world: int, device: torch.device) -> TrainResult:
    dtype = amp_dtype(config.amp, device)
    if config.batch_size % (world * config.accumulate):
        raise ValueError(f"batch size {config.batch_size} must be a multiple of world size x accumulate "
                         f"({world} x {config.accumulate})")
    micro = config.batch_size // (world * config.accumulate)

    model = build_model(config, world, device)
    optimizer = build_optimizer(model, base_lr=config.lr, predictor_lr=config.lr_predictor,
                                weight_decay=config.weight_decay, betas=tuple(config.betas),
                                larc=config.larc, trust_coefficient=config.larc_trust)
    scaler = grad_scaler(dtype, device)
    loader = make_loader(config.shards, micro, workers=config.workers, mode=config.mode, backend=config.backend,
                         seed=config.seed, epoch_size=config.epoch_size, max_lost=config.max_lost, device=device,
                         rank=rank, world=world, video_aug=config.video_aug, audio_aug=config.audio_aug,
                         temporal_consistency=config.temporal_consistency)
    if rank == 0:
        warn_if_clustered(config.shards)
        logger.info("rank 0 of %d on %s, autocast %s, %d clips per micro-batch", world, device, dtype, micro)
    probes = {u: resolve_modality(u, config.probe_modality) for u in config.probe} if rank == 0 else {}
    steps_per_epoch = max(1, len(loader) // config.accumulate)
    total = config.steps or config.epochs * steps_per_epoch
    warmup = min(total, round(config.warmup_epochs * steps_per_epoch))

    step, epoch, skipped_steps = 0, 0, 0
    finished = dict.fromkeys(COUNTED, 0)      # this rank's counts of the finished epochs
    path = resolve_resume(resume, config.out)
    if path is not None:
        step, finished, skipped_steps, saved = restore(path, model, optimizer, scaler, loader, rank,
                                                       model_choices(config.to_dict()))
        epoch = loader.epoch
        changed = changed_settings(saved, config)
        if changed and rank == 0:
            click.echo(f"resuming {path} with different {', '.join(changed)}: the run continues, but not "
                       "as the checkpoint's run would have (same options give an exact resume)", err=True)
    net = wrap_ddp(model, device, one_modality(config.terms)) if world > 1 else model

    def checkpoint() -> Path | None:
        """Collective under DDP (every rank's loader position and counts are kept); rank 0 writes.
        Never of non-finite weights (every rank has the same ones, so all stop together)."""
        check_finite_weights(model.state_dict(), step, optimizer.param_groups[0]["lr"], config.amp)
        loaders = [{**loader.state_dict(), "counts": dict(finished)}]
        if world > 1:
            loaders = [None] * world
            dist.all_gather_object(loaders, {**loader.state_dict(), "counts": dict(finished)})
        if rank != 0:
            return None
        return save_checkpoint(Path(config.out) / CHECKPOINT_NAME, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "step": step, "epoch": epoch,
            "loaders": loaders, "rng": rng_state(), "config": config.to_dict(), "skipped_steps": skipped_steps})

    run_log = RunLog(config.out, resume_step=step) if rank == 0 else None
    end = min(total, stop_after) if stop_after else total
    bar = _progress(progress and rank == 0, total, step)
    result = TrainResult(step, 0, 0.0, math.nan, 0, None)
    start, probe_seconds = time.perf_counter(), 0.0
    pending: list[tuple[int, float, int, dict[str, torch.Tensor]]] = []   # (step, lr, epoch, metrics) not yet on the host
    batches = epochs_of(loader, epoch, finished)
    net.train()
    try:
        while step < end:
            lr = apply_lr(optimizer, step, total, warmup, config.lr, config.lr_end)
            micro_batches = []
            for _ in range(config.accumulate):
                epoch, batch = next(batches)
                micro_batches.append(batch)
            step += 1
            probed = bool(config.probe) and probe_due(step, steps_per_epoch, config.probe_every, total)
            logged = step % config.log_every == 0 or step == end or probed
            saving = step % config.checkpoint_every == 0 and step < end
            metrics = train_step(net, optimizer, scaler, micro_batches, config.terms, dtype, device,
                                 host_sees=logged or saving)
            pending.append((step, lr, epoch, metrics))
            result.clips += config.batch_size
            bar.update(1)
            if not (logged or saving):
                continue                                # nothing waits on the host between these
            # The one copy to the host, and the NaN guard on every step since the last one.
            current = [loader.stats.get(k, 0) for k in COUNTED]
            values, counts = host_rows([m for *_, m in pending], current + [finished[k] + c for k, c in
                                                                           zip(COUNTED, current)], world)
            rows = []
            for (at, at_lr, at_epoch, _), row in zip(pending, values):
                check_finite(row["loss"], at, at_lr, config.amp)
                if "amp/skipped" in row:
                    skipped_steps += round(row.pop("amp/skipped"))
                    row[SKIPPED_STEPS] = skipped_steps
                rows.append({"step": at, **row, "lr/backbone": at_lr, "lr/predictor": config.lr_predictor,
                             "epoch": at_epoch})
            pending = []
            rate = result.clips / (time.perf_counter() - start - probe_seconds)   # training throughput
            rows[-1].update({"clips_per_s": rate, **{f"data/{k}": c for k, c in zip(COUNTED, counts)}})
            result.skipped_no_audio, result.lost, result.substituted = counts[len(COUNTED):]
            result.loss, result.skipped_steps = rows[-1]["loss"], skipped_steps
            if probed:   # before the checkpoint: a resume from it never misses this epoch's probe
                probe_start = time.perf_counter()
                rows[-1].update(run_probes(model, probes, train_clips=config.probe_train_clips,
                                           test_clips=config.probe_test_clips, device=str(device),
                                           seed=config.seed, rank=rank, world=world, epoch=epoch, step=step))
                probe_seconds += time.perf_counter() - probe_start
            result.history += rows
            if run_log is not None and logged:
                run_log.log(step, {k: v for k, v in rows[-1].items() if k != "step"})
            bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.2e}", clips_s=f"{rate:.1f}")
            if saving:
                checkpoint()
    finally:
        bar.close()
        result.seconds = time.perf_counter() - start - probe_seconds
        result.steps = step
        if run_log is not None:
            run_log.close()
    result.checkpoint = checkpoint()  # always one at the end, so --resume auto finds it
    if world > 1:
        dist.barrier()
    return result


def _progress(enabled: bool, total: int, initial: int):
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
