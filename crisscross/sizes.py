"""The CrissCross network sizes and Table 3 choices, without torch.

:data:`SIZES` and :data:`PREDICTORS` live here so that the training config and the command line can
check ``--model`` / ``--predictor`` without importing torch; :mod:`crisscross.models` builds the
networks and re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass

from crisscross.paper import MODEL

WIDTHS = (64, 128, 256, 512)  # channels of stages conv2..conv5 (Tables S5, S6)
RESNET18_LAYERS = (2, 2, 2, 2)  # residual blocks per stage of an 18-layer ResNet


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
