"""Full fine-tuning (appendix E.2, Table S11) and the shared supervised loop of the linear probe.

The video backbone, its global average pool replaced by a global max pool, gets a new linear
layer; everything trains with SGD + momentum and a multi-step schedule (epoch milestones) on one
augmented clip per training video per epoch (the eval-train augmentations of Table S3). Testing
averages the softmax of uniformly spaced clips per video (10 in the paper), without augmentation.

The linear probe (probe.py) is the same loop with the backbone frozen and the head reading the
protocol's max-pooled conv5 map.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from avshards.format import MANIFEST_NAME, AVClip
from avshards.reader import open_shards, shard_urls
from crisscross.eval.errors import EvalError
from crisscross.eval.features import (INPUTS, ClipSpec, clip_rng, clip_starts, duration, pooled, split_clips,
                                      video_id)
from crisscross.paper import FinetuneSettings

SHUFFLE_BUFFER = 256        # clips held for shuffling the training stream (memory vs randomness)


class Classifier(nn.Module):
    """Backbone -> pooled features -> dropout -> linear layer.

    ``spec`` None: the backbone's own global pooling (set to "max" for fine-tuning, E.2);
    otherwise the protocol's max pool of the conv5 map (the linear probe, E.1).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0,
                 spec: ClipSpec | None = None, frozen: bool = False) -> None:
        super().__init__()
        self.backbone, self.spec, self.frozen = backbone, spec, frozen
        if spec is None:
            backbone.pool = "max"
        backbone.requires_grad_(not frozen)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.feature_dim, num_classes) if spec is None else nn.LazyLinear(num_classes)

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.frozen:     # a frozen backbone keeps its batch-norm statistics
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            f = self.backbone(x) if self.spec is None else pooled(self.backbone, x, self.spec)
        return self.head(self.dropout(f))


def shard_classes(url: str, split: str | None = None) -> list[str]:
    """Sorted class names of a shard folder: from its manifest, else by reading the samples."""
    try:
        with open(os.path.join(url, MANIFEST_NAME)) as f:
            labels = json.load(f).get("labels")
        if labels:
            return sorted(labels)
    except (OSError, ValueError):
        pass
    return sorted({str(c.label) for c in split_clips(url, split)})


class TrainClips(IterableDataset):
    """One augmented clip per sample of a split, shuffled through a buffer; shards split over
    DataLoader workers. Randomness depends on (seed, epoch, key) only."""

    def __init__(self, url: str, split: str, spec: ClipSpec, classes: Sequence[str], seed: int = 0) -> None:
        self.urls, self.split, self.spec, self.seed = shard_urls(url), split, spec, seed
        self.index = {c: i for i, c in enumerate(classes)}
        self.epoch = 0

    def _clips(self) -> Iterator[AVClip]:
        info = get_worker_info()
        urls = self.urls if info is None else self.urls[info.id::info.num_workers]
        for u in urls:
            for clip in open_shards(u):
                if clip.split == self.split and str(clip.label) in self.index:
                    yield clip

    def _sample(self, clip: AVClip) -> tuple[torch.Tensor, int]:
        rng = clip_rng(self.seed + 1000003 * self.epoch, clip.key)
        start = clip_starts(duration(clip, self.spec.modality), self.spec.seconds, 1, True, rng)
        return INPUTS[self.spec.modality](clip, start, self.spec, True, rng)[0], self.index[str(clip.label)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        buffer: list[tuple[torch.Tensor, int]] = []
        for clip in self._clips():
            buffer.append(self._sample(clip))
            if len(buffer) >= SHUFFLE_BUFFER:
                yield buffer.pop(int(rng.integers(len(buffer))))
        rng.shuffle(buffer)
        yield from buffer


@dataclass
class TrainResult:
    """Outcome of a supervised run: video-level test accuracy and what produced it."""

    accuracy: float
    classes: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    losses: list[float]             # mean training loss per epoch
    steps: int

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "num_test_videos": int(len(self.y_true)),
                "epoch_losses": self.losses, "steps": self.steps}


def train_classifier(model: Classifier, url: str, classes: list[str], settings: FinetuneSettings,
                     spec: ClipSpec, train_split: str = "train", test_split: str = "test",
                     device: str = "cpu", seed: int = 0, max_steps: int | None = None, workers: int = 0,
                     progress: bool = True) -> TrainResult:
    """SGD (momentum, weight decay) with a multi-step schedule over epochs, then the clip-averaged test."""
    torch.manual_seed(seed)
    model.to(device)
    data = TrainClips(url, train_split, spec, classes, seed)
    loader = DataLoader(data, batch_size=settings.batch_size, num_workers=workers, drop_last=False)
    first = next(data._clips(), None)
    if first is None:
        raise EvalError(f"no training samples with split {train_split!r} of the classes {classes[:3]}... in "
                        f"{url}; build it with avshards build --dataset NAME, or pass --train-split")
    if isinstance(model.head, nn.LazyLinear):       # materialise the probe's head before the optimiser
        with torch.no_grad():
            model.eval()(data._sample(first)[0][None].to(device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(settings.milestones), settings.gamma)
    loss_fn, losses, steps = nn.CrossEntropyLoss(), [], 0
    for epoch in range(settings.epochs):
        data.epoch = epoch
        model.train()
        total, count = 0.0, 0
        for x, y in tqdm(loader, disable=not progress, desc=f"train epoch {epoch + 1}/{settings.epochs}",
                         unit="batch"):
            # bfloat16 autocast on GPUs: the speed of mixed precision without a gradient scaler.
            with torch.autocast("cuda", torch.bfloat16, enabled=str(device).startswith("cuda")):
                loss = loss_fn(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count, steps = total + loss.item(), count + 1, steps + 1
            if max_steps is not None and steps >= max_steps:
                break
        losses.append(total / max(count, 1))
        sched.step()
        if max_steps is not None and steps >= max_steps:
            break
    y_true, y_pred = evaluate(model, url, classes, spec, settings.test_clips, test_split, device,
                              settings.batch_size, progress)
    return TrainResult(float((y_true == y_pred).mean()), classes, y_true, y_pred, losses, steps)


@torch.no_grad()
def evaluate(model: nn.Module, url: str, classes: list[str], spec: ClipSpec, test_clips: int,
             split: str = "test", device: str = "cpu", batch_size: int = 32, progress: bool = True
             ) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class per test video: softmax averaged over ``test_clips`` uniform clips."""
    model.eval().to(device)
    index = {c: i for i, c in enumerate(classes)}
    probs: dict[str, torch.Tensor] = {}
    truth: dict[str, int] = {}
    for clip in tqdm(split_clips(url, split), disable=not progress, desc="test", unit="sample"):
        starts = clip_starts(duration(clip, spec.modality), spec.seconds, test_clips, False, None)
        x = INPUTS[spec.modality](clip, starts, spec, False, None)
        p = torch.cat([model(b.to(device)).softmax(-1).cpu() for b in x.split(batch_size)])
        vid = video_id(clip)
        probs[vid] = probs.get(vid, 0) + p.sum(0)
        truth[vid] = index.get(str(clip.label), -1)
    if not probs:
        raise EvalError(f"no test samples with split {split!r} in {url}; pass --test-split")
    return np.array(list(truth.values())), np.array([int(p.argmax()) for p in probs.values()])


def finetune_report(result: TrainResult, settings: FinetuneSettings, spec: ClipSpec, urls: Sequence[str],
                    checkpoint: str | None, name: str, label: str, protocol: str = "finetune") -> dict:
    """The JSON report of a fine-tuning (or probe) run."""
    return {"title": f"{'Full fine-tuning' if protocol == 'finetune' else 'Linear probe'} on {name}",
            "protocol": protocol, "method": label, "dataset": name, "shards": list(urls),
            "checkpoint": checkpoint, "random_init": checkpoint is None, "settings": asdict(settings),
            "spec": asdict(spec), "accuracy": result.accuracy, **result.to_json(),
            "notes": [f"top-1 video accuracy; softmax averaged over {settings.test_clips} uniformly "
                      "spaced clips per test video, no test augmentation."]}
