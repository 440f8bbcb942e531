"""Training configuration: one typed dataclass at the CLI edge, and named presets.

The paper's presets are built from :data:`crisscross.paper.PRETRAIN` (Table S10) and train the
paper's model; ``tiny-cpu`` is ours: the ``tiny`` model (:data:`crisscross.models.SIZES`), small
batches, fp32, enough steps in a minute or two on 2 CPU cores to show learning. Below the CLI the
trainer receives plain values from this object, never the object itself in the model, loss or data
code.

Learning rates follow the paper unless given: the predictors' is 10x the base LR (Sec. 4.4), and
the uni-modal rows of Table 1 (``terms`` of ``v1v2`` or ``a1a2`` alone) start from Appendix G.1's
rates (:data:`crisscross.paper.ABLATION_LR`) instead of the preset's, see :func:`preset_config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from crisscross import paper
from crisscross.data.choices import (TEMPORAL_CONSISTENCY, check_audio_augs, check_backend, check_choice,
                                     check_mode, check_video_augs)
from crisscross.losses import ALL_TERMS, resolve_terms
from crisscross.models import check_model

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
    lr_predictor: float | None = None        # constant predictor LR; None = PREDICTOR_LR_FACTOR x lr
    weight_decay: float = paper.PRETRAIN["kinetics-sound"].weight_decay
    betas: tuple[float, float] = paper.PRETRAIN["kinetics-sound"].betas
    warmup_epochs: float = paper.PRETRAIN["kinetics-sound"].warmup_epochs
    larc: bool = False
    larc_trust: float = paper.PRETRAIN["kinetics-sound"].larc_trust
    accumulate: int = 1                      # micro-batches per optimiser step
    # Method
    terms: tuple[str, ...] = ALL_TERMS       # loss terms: groups and/or single pairs (Table 1)
    mode: str = "mild"                       # relaxation of the two views' timing
    model: str = "paper"                     # network size: "paper" or "tiny" (ours, crisscross.models.SIZES)
    projector_layers: int = paper.MODEL.proj_layers   # Table 3: 3 (paper) or 2
    predictor: str = "separate"              # Table 3: one predictor per modality, or one "shared"
    # Augmentation ablations (Table 5 codes; Sec. 4.5 "Temporal Consistency": view or frame)
    video_aug: tuple[str, ...] = paper.PRETRAIN_VIDEO_AUGS
    audio_aug: tuple[str, ...] = paper.PRETRAIN_AUDIO_AUGS
    temporal_consistency: str = "view"
    # Machinery
    backend: str = "torch"                   # augmentation backend: torch or dali
    device: str = "auto"                     # auto = cuda when available, else cpu
    amp: str = "auto"                        # auto = bf16 on GPUs that have it, fp16 on others, off on CPU
    sync_bn: bool = True                     # SyncBatchNorm under DDP (as the official code)
    workers: int = 2                         # DataLoader workers per rank
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
        self.video_aug, self.audio_aug = tuple(self.video_aug), tuple(self.audio_aug)
        self.betas = tuple(self.betas)
        self.probe = tuple(self.probe)
        if self.lr_predictor is None:
            self.lr_predictor = paper.PREDICTOR_LR_FACTOR * self.lr
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
    check_video_augs(c.video_aug)
    check_audio_augs(c.audio_aug)
    check_choice("--temporal-consistency", c.temporal_consistency, TEMPORAL_CONSISTENCY)
    if c.amp not in AMP_CHOICES:
        raise ValueError(f"unknown --amp {c.amp!r}; use one of {', '.join(AMP_CHOICES)}")
    check_backend(c.backend)
    check_model(c.model, c.projector_layers, c.predictor)
    if c.probe_modality not in PROBE_MODALITIES:
        raise ValueError(f"unknown --probe-modality {c.probe_modality!r}; use one of {', '.join(PROBE_MODALITIES)}")
    for name in ("batch_size", "epochs", "accumulate", "checkpoint_every", "log_every", "probe_every",
                 "probe_train_clips", "probe_test_clips"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be at least 1 (got {getattr(c, name)})")
    if c.steps is not None and c.steps < 1:
        raise ValueError(f"steps must be at least 1 (got {c.steps})")
    if c.batch_size % c.accumulate:
        raise ValueError(f"batch size {c.batch_size} is not a multiple of accumulate {c.accumulate}")


def _paper_preset(name: str, **kw: Any) -> dict[str, Any]:
    s = paper.PRETRAIN[name]   # Table S10
    return dict(preset=name, batch_size=s.batch_size, epoch_size=s.epoch_size, epochs=s.epochs,
                lr=s.lr_start, lr_end=s.lr_end, weight_decay=s.weight_decay,
                betas=s.betas, warmup_epochs=s.warmup_epochs, larc=s.larc, larc_trust=s.larc_trust,
                workers=8, checkpoint_every=1000, log_every=10, **kw)


PRESETS: dict[str, dict[str, Any]] = {
    "kinetics-sound": _paper_preset("kinetics-sound"),
    "kinetics400": _paper_preset("kinetics400"),
    "audioset": _paper_preset("audioset"),
    # Ours: the tiny model (1.2M parameters, not the paper's), batch 4, 8 steps, fp32 on CPU. A
    # short warm-up so the few steps still see the cosine part of the schedule.
    "tiny-cpu": dict(preset="tiny-cpu", model="tiny", batch_size=4, epoch_size=16, epochs=2, warmup_epochs=0.5,
                     amp="off", device="cpu", workers=1, checkpoint_every=100, log_every=1),
}


def unimodal_row(terms: tuple[str, ...]) -> str | None:
    """``"v1v2"`` or ``"a1a2"`` when ``terms`` is that one pair (Table 1's uni-modal rows), else None."""
    pairs = resolve_terms(terms)
    return pairs[0] if len(pairs) == 1 and pairs[0] in paper.ABLATION_LR else None


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The preset ``name`` with ``overrides`` applied (``None`` values mean "keep the preset's").

    A uni-modal row of Table 1 (``terms`` ``v1v2`` or ``a1a2`` alone) without an ``lr`` override
    takes Appendix G.1's learning rates (:data:`crisscross.paper.ABLATION_LR`); the cosine's end is
    scaled with the base LR (so Kinetics-Sound's 0 stays 0) unless ``lr_end`` is given.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    config = TrainConfig(**{**PRESETS[name], **given})
    row = unimodal_row(config.terms)
    if row is None or "lr" in given:
        return config
    lr, lr_predictor = paper.ABLATION_LR[row]
    return dataclasses.replace(config, lr=lr, lr_end=given.get("lr_end", config.lr_end * lr / config.lr),
                               lr_predictor=given.get("lr_predictor", lr_predictor))


def describe_presets() -> str:
    """A short table of the presets' main values, for --help."""
    rows = []
    for name, p in PRESETS.items():
        c = TrainConfig(**p)
        rows.append(f"{name:15s} model {c.model:5s}  batch {c.batch_size:5d}  epoch size {c.epoch_size}  epochs {c.epochs}  "
                    f"lr {c.lr:g}->{c.lr_end:g} (pred {c.lr_predictor:g})  LARC {'on' if c.larc else 'off'}")
    return "\n".join(rows)
