"""A linear (fully connected) layer trained on a frozen backbone, for feature sets too large for
the SVM (appendix E.1: Kinetics-400, and 32-frame UCF101 / HMDB51).

Features are computed on the fly (never stored): each epoch takes ``clips_per_video`` augmented
clips per training video (:data:`crisscross.paper.PROBE_CLIPS_PER_VIDEO`: 1 for Kinetics-400, 10
for 32-frame UCF/HMDB), max-pools conv5 as in the SVM protocol, and trains only the linear layer.
Testing averages the softmax of uniformly spaced clips per video, as for fine-tuning.
"""

from __future__ import annotations

from torch import nn

from crisscross.eval.features import ClipSpec
from crisscross.eval.finetune import Classifier, TrainResult, train_classifier
from crisscross.paper import FinetuneSettings

# The paper gives no optimiser settings for the probe; these are AVID-style defaults (SGD with a
# multi-step schedule), documented in docs/evaluation.md and overridable from the command line.
PROBE_DEFAULTS = dict(batch_size=64, epochs=20, milestones=(10, 15), lr=0.01, gamma=0.1, weight_decay=0.0)


def probe_settings(frames: int, crop_size: int, test_clips: int, **overrides) -> FinetuneSettings:
    """The probe's :class:`FinetuneSettings`: :data:`PROBE_DEFAULTS` with ``overrides`` applied."""
    values = {**PROBE_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    return FinetuneSettings(frames=frames, crop_size=crop_size, test_clips=test_clips, **values)


def linear_probe(backbone: nn.Module, url: str, classes: list[str], settings: FinetuneSettings,
                 spec: ClipSpec, clips_per_video: int = 1, **kw) -> TrainResult:
    """Train a linear layer on the frozen, max-pooled conv5 features of ``backbone``; test it.
    An epoch is ``settings.epoch_size`` clips, or ``clips_per_video`` per training video."""
    model = Classifier(backbone, len(classes), settings.dropout, spec=spec, frozen=True)
    return train_classifier(model, url, classes, settings, spec, per_video=clips_per_video, **kw)
