"""CrissCross networks: the two backbones, the heads, and the model that joins them.

Architectures follow the paper's Appendix F (Tables S5-S8) with the details its public code fixes
(shared/reference/official-code.md). With the defaults the parameter counts are exactly those in
:data:`crisscross.paper.MODEL` (a test asserts them):

=====================================  ============
video backbone, R(2+1)D-18 (AVID)        15,379,136
audio backbone, ResNet-18 on log-mels    11,170,240
projector, 3 layers (2 layers)            9,455,616 (5,255,168)
predictor                                 2,100,736
CrissCross, both modalities              49,662,080
  with one shared predictor (Table 3)    47,561,344
  with 2-layer projectors (Table 3)      41,261,184
=====================================  ============

Both backbones are one generic :class:`ResNet` (stem + residual block maker + layer counts +
widths), like torchvision's video ResNet; smaller ``layers`` / ``widths`` give smaller networks of
the same design. :data:`SIZES` names two: ``"paper"`` (the table above) and ``"tiny"`` (ours, not
the paper's: one block per stage, a quarter of the widths, 1,151,840 parameters) for CPUs (the
``tiny-cpu`` preset and the demo use it). The ``pool`` attribute picks the global pooling of the
conv5 map: ``"avg"`` for pretraining, ``"max"`` for evaluation, ``"none"`` to return the map itself.
Nothing here computes a loss (see :mod:`crisscross.losses`); state dicts are plain PyTorch ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from crisscross.paper import MODEL

POOLS = ("avg", "max", "none")
WIDTHS = (64, 128, 256, 512)  # channels of stages conv2..conv5 (Tables S5, S6)
RESNET18_LAYERS = (2, 2, 2, 2)  # residual blocks per stage of an 18-layer ResNet


def global_pool(x: Tensor, pool: str) -> Tensor:
    """Pool a ``[B, C, ...]`` map over every axis after the channels: ``"avg"``, ``"max"`` or ``"none"``."""
    if pool == "none":
        return x
    flat = x.flatten(2)
    return flat.mean(-1) if pool == "avg" else flat.amax(-1)


class R2Plus1DBlock(nn.Module):
    """AVID's residual block: (spatial 1x3x3 -> temporal 3x1x1) twice, BN after the residual sum.

    The middle width equals the output width (unlike torchvision's parameter-matched M_i), the
    stride is split between the spatial and the temporal convolution, and the downsampling
    shortcut is a bare 1x1x1 convolution (official code).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()

        def spatial(c_in: int, s: int) -> nn.Conv3d:
            return nn.Conv3d(c_in, out_channels, (1, 3, 3), (1, s, s), (0, 1, 1), bias=False)

        def temporal(s: int) -> nn.Conv3d:
            return nn.Conv3d(out_channels, out_channels, (3, 1, 1), (s, 1, 1), (1, 0, 0), bias=False)

        def bn_relu() -> tuple[nn.Module, nn.Module]:
            return nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True)

        self.main = nn.Sequential(
            spatial(in_channels, stride), *bn_relu(), temporal(stride), *bn_relu(),
            spatial(out_channels, 1), *bn_relu(), temporal(1))
        self.out_bn = nn.BatchNorm3d(out_channels)
        self.shortcut = (nn.Conv3d(in_channels, out_channels, 1, stride, bias=False)
                         if stride != 1 or in_channels != out_channels else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.out_bn(self.main(x) + self.shortcut(x)))


class BasicBlock(nn.Module):
    """ResNet's 2-D basic block: 3x3 -> BN -> ReLU -> 3x3 -> BN, plus a (1x1 conv + BN) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels))
        self.shortcut = (nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                       nn.BatchNorm2d(out_channels))
                         if stride != 1 or in_channels != out_channels else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.main(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A generic ResNet: ``stem``, then one stage per entry of ``layers`` made with ``block``.

    Stage ``i`` has ``widths[i]`` channels and ``layers[i]`` blocks; every stage after the first
    starts with a stride-2 block. ``stem`` must output ``widths[0]`` channels.
    """

    def __init__(self, stem: nn.Module, block: Callable[[int, int, int], nn.Module],
                 layers: Sequence[int], widths: Sequence[int] = WIDTHS, pool: str = "avg") -> None:
        super().__init__()
        self.stem = stem
        stages, channels = [], widths[0]
        for i, (width, count) in enumerate(zip(widths, layers)):
            blocks = [block(channels, width, 1 if i == 0 else 2)]
            blocks += [block(width, width, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.feature_dim = channels
        self.pool = pool
        for m in self.modules():  # kaiming init as torchvision's ResNets and the official code
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def pool(self) -> str:
        """Global pooling of :meth:`forward`: ``"avg"`` (pretraining), ``"max"`` (evaluation), ``"none"``."""
        return self._pool

    @pool.setter
    def pool(self, value: str) -> None:
        if value not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {value!r}")
        self._pool = value

    def features(self, x: Tensor) -> Tensor:
        """The conv5 map ``[B, feature_dim, ...]``, before any pooling."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        return global_pool(self.features(x), self.pool)


class VideoBackbone(ResNet):
    """R(2+1)D-18 as in AVID (paper Table S5): input ``[B, 3, T, H, W]``, output ``[B, 512]``.

    Stem: full 3x7x7 convolution, stride (1, 2, 2), BN, ReLU, 1x3x3/(1, 2, 2) max pool; stages
    conv3-conv5 halve time and space. 8 x 112^2 gives a 512 x 1 x 4 x 4 conv5 map.
    """

    def __init__(self, pool: str = "avg", layers: Sequence[int] = RESNET18_LAYERS,
                 widths: Sequence[int] = WIDTHS) -> None:
        stem = nn.Sequential(
            nn.Conv3d(3, widths[0], (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        super().__init__(stem, R2Plus1DBlock, layers, widths, pool)


class AudioBackbone(ResNet):
    """ResNet-18 on log-mel spectrograms (paper Table S6): input ``[B, 1, 80, T]``, output ``[B, 512]``.

    A 1-channel 7x7/2 stem, 3x3/2 max pool, BasicBlocks, no classifier. 80 x 201 gives a
    512 x 3 x 7 conv5 map.
    """

    def __init__(self, pool: str = "avg", layers: Sequence[int] = RESNET18_LAYERS,
                 widths: Sequence[int] = WIDTHS) -> None:
        stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1))
        super().__init__(stem, BasicBlock, layers, widths, pool)


class MLP(nn.Sequential):
    """Linear layers through ``dims`` with BN + ReLU between them, and BN after the last if ``last_bn``."""

    def __init__(self, dims: Sequence[int], last_bn: bool = False) -> None:
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(dims) - 2
            layers.append(nn.Linear(d_in, d_out))
            if not last or last_bn:
                layers.append(nn.BatchNorm1d(d_out))
            if not last:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Projector(MLP):
    """Projection head, paper Table S7: "fc-bn-relu 2048, fc-bn-relu 2048, fc-bn 2048".

    ``num_layers=2`` is Table 3's "2 layers proj." variant (fc-bn-relu, fc-bn).
    """

    def __init__(self, in_dim: int = MODEL.feature_dim, hidden_dim: int = MODEL.proj_hidden,
                 out_dim: int = MODEL.proj_dim, num_layers: int = MODEL.proj_layers) -> None:
        if num_layers < 1:
            raise ValueError(f"a projector needs at least one layer, not num_layers={num_layers}")
        super().__init__([in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim], last_bn=True)


class Predictor(MLP):
    """Prediction head, paper Table S8: "fc-bn-relu 512, fc 2048" (a bottleneck, no output BN)."""

    def __init__(self, dim: int = MODEL.proj_dim, hidden_dim: int = MODEL.pred_hidden) -> None:
        super().__init__([dim, hidden_dim, dim])


class CrissCross(nn.Module):
    """The CrissCross model: per modality a backbone, a projector and a predictor (paper Alg. 1).

    ``forward(v1, v2, a1, a2)`` returns ``z = projector(backbone(x))`` and ``p = predictor(z)``
    for each view, as ``{"zv1", "pv1", ...}``; the loss (with its stop-gradient) lives in
    :mod:`crisscross.losses`. Each view goes through the networks on its own, so batch norm sees
    one view at a time, as in the paper's pseudocode. A view given as ``None`` is skipped
    (uni-modal ablations of Table 1 need no audio, or no video).

    ``shared_predictor=True`` is Table 3's "comm. pred." variant: a single predictor for both
    modalities, fed l2-normalised projections ("l2-normalized feature vectors f_v(v) and f_a(a)
    are fed to the predictor", Sec. 4.4). It is then both ``video_predictor`` and
    ``audio_predictor`` (one set of weights; the state dict names it under both).
    """

    def __init__(self, video: nn.Module, audio: nn.Module, projector_layers: int = MODEL.proj_layers,
                 proj_hidden: int = MODEL.proj_hidden, proj_dim: int = MODEL.proj_dim,
                 pred_hidden: int = MODEL.pred_hidden, shared_predictor: bool = False) -> None:
        super().__init__()
        self.video_backbone = video
        self.audio_backbone = audio
        self.video_projector = Projector(video.feature_dim, proj_hidden, proj_dim, projector_layers)
        self.audio_projector = Projector(audio.feature_dim, proj_hidden, proj_dim, projector_layers)
        self.video_predictor = Predictor(proj_dim, pred_hidden)
        self.audio_predictor = self.video_predictor if shared_predictor else Predictor(proj_dim, pred_hidden)
        self.shared_predictor = shared_predictor

    def _branch(self, modality: str) -> tuple[nn.Module, nn.Module, nn.Module]:
        return (getattr(self, f"{modality}_backbone"), getattr(self, f"{modality}_projector"),
                getattr(self, f"{modality}_predictor"))

    def forward(self, v1: Tensor | None, v2: Tensor | None,
                a1: Tensor | None = None, a2: Tensor | None = None) -> dict[str, Tensor]:
        out = {}
        for name, x in (("v1", v1), ("v2", v2), ("a1", a1), ("a2", a2)):
            if x is None:
                continue
            backbone, projector, predictor = self._branch("video" if name[0] == "v" else "audio")
            z = projector(backbone(x))
            out["z" + name] = z
            out["p" + name] = predictor(F.normalize(z, dim=1) if self.shared_predictor else z)
        return out


@dataclass(frozen=True)
class ModelSize:
    """The widths of one CrissCross size: blocks per stage and channels of both backbones, head sizes."""

    layers: tuple[int, ...]
    widths: tuple[int, ...]
    proj_hidden: int
    proj_dim: int
    pred_hidden: int
    description: str


SIZES = {
    "paper": ModelSize(RESNET18_LAYERS, WIDTHS, MODEL.proj_hidden, MODEL.proj_dim, MODEL.pred_hidden,
                       "the paper's: R(2+1)D-18 video, ResNet-18 audio (Tables S5-S8)"),
    # Ours, for CPUs: one block per stage, a quarter of the channels, heads of 256 (bottleneck 64).
    "tiny": ModelSize((1, 1, 1, 1), (16, 32, 64, 128), 256, 256, 64,
                      "ours, not the paper's: the same design with one block per stage and a quarter of the widths"),
}
PREDICTORS = ("separate", "shared")     # Table 3: one predictor per modality (default), or one for both


def check_model(model: str, projector_layers: int, predictor: str) -> None:
    """Raise ValueError with one clear sentence for a model choice :func:`build_crisscross` cannot build."""
    if model not in SIZES:
        raise ValueError(f"unknown --model {model!r}; use one of {', '.join(SIZES)}")
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown --predictor {predictor!r}; use one of {', '.join(PREDICTORS)}")
    if projector_layers < 1:
        raise ValueError(f"a projector needs at least one layer, not --projector-layers {projector_layers}")


def build_backbones(model: str = "paper", pool: str = "avg") -> tuple[VideoBackbone, AudioBackbone]:
    """The (video, audio) backbones of the model size ``model`` (a key of :data:`SIZES`)."""
    check_model(model, MODEL.proj_layers, PREDICTORS[0])
    s = SIZES[model]
    return VideoBackbone(pool, s.layers, s.widths), AudioBackbone(pool, s.layers, s.widths)


def build_crisscross(model: str = "paper", projector_layers: int = MODEL.proj_layers,
                     predictor: str = "separate") -> CrissCross:
    """CrissCross of the size ``model`` ("paper": R(2+1)D-18 video, ResNet-18 audio; "tiny": ours),
    average pooling, ``projector_layers`` per projector and a ``"separate"`` or ``"shared"``
    predictor (the Table 3 variants). The arguments are those a checkpoint's config records
    (:func:`crisscross.checkpoint.model_choices`)."""
    check_model(model, projector_layers, predictor)
    s = SIZES[model]
    video, audio = build_backbones(model)
    return CrissCross(video, audio, projector_layers=projector_layers, proj_hidden=s.proj_hidden,
                      proj_dim=s.proj_dim, pred_hidden=s.pred_hidden, shared_predictor=predictor == "shared")


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())
