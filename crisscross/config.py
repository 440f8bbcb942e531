"""Training configuration: one typed dataclass at the CLI edge, and named presets.

The paper's presets are built from :data:`crisscross.paper.PRETRAIN` (Table S10); ``tiny-cpu`` is
ours: the real model, a handful of steps, small enough to train in a minute or two on 2 CPU cores.
Below the CLI the trainer receives plain values from this object, never the object itself in the
model, loss or data code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from crisscross import paper
from crisscross.data.choices import check_backend, check_mode
from crisscross.terms import ALL_TERMS, resolve_terms

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
PROBE_MODALITIES = ("auto", "video", "audio")


@dataclass
class TrainConfig:
    """Everything one pretraining run needs. ``batch_size`` is global (all ranks, one optimiser step)."""

    shards: str = ""                         # local folder, brace pattern, http(s):// or s3:// URL
    out: str = "runs/crisscross"             # checkpoints, logs and curves go here
    preset: str = "tiny-cpu"                 # the preset these values started from (for the record)
    # Schedule (Table S10)
    batch_size: int = 4
    epoch_size: int | None = 16              # clips per epoch; None = the whole set once
    epochs: int = 2
    steps: int | None = None                 # total optimiser steps; overrides epochs when set
    lr: float = paper.PRETRAIN["kinetics-sound"].lr_start
    lr_end: float = paper.PRETRAIN["kinetics-sound"].lr_end
    lr_predictor: float = paper.PRETRAIN["kinetics-sound"].lr_predictor
    weight_decay: float = paper.PRETRAIN["kinetics-sound"].weight_decay
    betas: tuple[float, float] = paper.PRETRAIN["kinetics-sound"].betas
    warmup_epochs: float = paper.PRETRAIN["kinetics-sound"].warmup_epochs
    larc: bool = False
    larc_trust: float = paper.PRETRAIN["kinetics-sound"].larc_trust
    accumulate: int = 1                      # micro-batches per optimiser step
    # Method
    terms: tuple[str, ...] = ALL_TERMS       # loss terms: groups and/or single pairs (Table 1)
    mode: str = "mild"                       # relaxation of the two views' timing
    projector_layers: int = paper.MODEL.proj_layers
    # Machinery
    backend: str = "torch"                   # augmentation backend: torch or dali
    device: str = "auto"                     # auto = cuda when available, else cpu
    amp: str = "auto"                        # auto = bf16 on GPUs that have it, fp16 on others, off on CPU
    sync_bn: bool = False                    # SyncBatchNorm under DDP
    workers: int = 2                         # DataLoader workers per rank
    max_lost: float | int | None = None      # clips of an epoch a rank may lose to unreadable shards before
                                             # training stops: a fraction (float) or a count (int);
                                             # None = the stream's default (avshards.stream.DEFAULT_MAX_LOST)
    seed: int = 0
    checkpoint_every: int = 500              # optimiser steps between checkpoints (and one at the end)
    log_every: int = 1                       # optimiser steps between log rows
    # Linear-SVM probe during training (crisscross.training_probe): labelled shard folders with train/test splits
    probe: tuple[str, ...] = ()
    probe_every: int = 1                     # epochs between probes (plus one at the end)
    probe_modality: str = "auto"             # auto = video when the shards have frames, else audio
    probe_train_clips: int = 2               # clips per training video (eval uses paper.EVAL's)
    probe_test_clips: int = 1                # clips per test video
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def __post_init__(self) -> None:
        self.terms = tuple(self.terms)
        self.betas = tuple(self.betas)
        self.probe = tuple(self.probe)
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for checkpoints and json."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; ignores keys this version does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def check_config(c: TrainConfig) -> None:
    """Raise ValueError with one clear sentence for a value the trainer cannot use."""
    resolve_terms(c.terms)  # raises with the valid names
    check_mode(c.mode)
    if c.amp not in AMP_CHOICES:
        raise ValueError(f"unknown --amp {c.amp!r}; use one of {', '.join(AMP_CHOICES)}")
    check_backend(c.backend)
    if c.probe_modality not in PROBE_MODALITIES:
        raise ValueError(f"unknown --probe-modality {c.probe_modality!r}; use one of {', '.join(PROBE_MODALITIES)}")
    for name in ("batch_size", "epochs", "accumulate", "checkpoint_every", "log_every", "probe_every",
                 "probe_train_clips", "probe_test_clips"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be at least 1 (got {getattr(c, name)})")
    if c.max_lost is not None and (c.max_lost < 0 or isinstance(c.max_lost, float) and c.max_lost > 1.0):
        raise ValueError(f"--max-lost {c.max_lost} must be a fraction of the epoch in [0, 1] (e.g. 0.01) or a "
                         "count of clips (e.g. 20)")
    if c.steps is not None and c.steps < 1:
        raise ValueError(f"steps must be at least 1 (got {c.steps})")
    if c.batch_size % c.accumulate:
        raise ValueError(f"batch size {c.batch_size} is not a multiple of accumulate {c.accumulate}")


def _paper_preset(name: str, **kw: Any) -> dict[str, Any]:
    s = paper.PRETRAIN[name]   # Table S10
    return dict(preset=name, batch_size=s.batch_size, epoch_size=s.epoch_size, epochs=s.epochs,
                lr=s.lr_start, lr_end=s.lr_end, lr_predictor=s.lr_predictor, weight_decay=s.weight_decay,
                betas=s.betas, warmup_epochs=s.warmup_epochs, larc=s.larc, larc_trust=s.larc_trust,
                workers=8, checkpoint_every=1000, log_every=10, **kw)


PRESETS: dict[str, dict[str, Any]] = {
    "kinetics-sound": _paper_preset("kinetics-sound"),
    "kinetics400": _paper_preset("kinetics400"),
    "audioset": _paper_preset("audioset"),
    # Ours: the real 50M-parameter model, batch 4, 8 steps, fp32 on CPU. A short warm-up so the
    # few steps still see the cosine part of the schedule.
    "tiny-cpu": dict(preset="tiny-cpu", batch_size=4, epoch_size=16, epochs=2, warmup_epochs=0.5,
                     amp="off", device="cpu", workers=1, checkpoint_every=100, log_every=1),
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The preset ``name`` with ``overrides`` applied (``None`` values mean "keep the preset's")."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**values)


def describe_presets() -> str:
    """A short table of the presets' main values, for --help."""
    rows = []
    for name, p in PRESETS.items():
        c = TrainConfig(**p)
        rows.append(f"{name:15s} batch {c.batch_size:5d}  epoch size {c.epoch_size}  epochs {c.epochs}  "
                    f"lr {c.lr:g}->{c.lr_end:g} (pred {c.lr_predictor:g})  LARC {'on' if c.larc else 'off'}")
    return "\n".join(rows)
