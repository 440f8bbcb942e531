"""Fig. 1: the distribution of learned representations, clip embeddings projected to 2-D.

Each video's feature is the evaluation's (:func:`crisscross.eval.features.extract`: conv5 max-pooled
as for retrieval (video) or the ESC-50 linear protocol (audio), averaged over the video's clips).
The features are l2-normalised and projected with t-SNE (after PCA to at most 50 dimensions, the
usual speed-up) or PCA alone, one panel per checkpoint, points coloured by label when there are
labels. Each panel's title carries the *spread* of the features (mean pairwise cosine distance,
0 when every clip maps to one direction): the paper's claim is that the asynchronous loss widens
the distribution, and the number says so without reading the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crisscross.eval.features import ClipSpec, protocol_spec
from crisscross.viz import VizError, pyplot

METHODS = ("tsne", "pca")
# The evaluation protocol whose clip spec (frames, pooling) gives each modality's features.
SPEC_PROTOCOL = {"video": "retrieval", "audio": "audio_linear"}
PANEL_INCHES = 4.0
DPI = 100
MAX_LEGEND = 20                     # more classes than this: colours only, no legend


@dataclass
class EmbeddingPanel:
    """One checkpoint's projected features: ``xy`` [N, 2], a label per point (None: unlabelled)."""

    title: str
    xy: np.ndarray
    labels: list[str] | None
    spread: float


def modality_spec(modality: str, crop_size: int | None = None, frames: int | None = None) -> ClipSpec:
    """The evaluation's :class:`ClipSpec` for ``modality`` (retrieval for video, ESC-50 linear for audio)."""
    video = modality == "video"
    return protocol_spec(SPEC_PROTOCOL[modality], modality, frames=frames if video else None,
                         crop_size=crop_size if video else None)


def known_labels(labels: Sequence[str]) -> list[str] | None:
    """``labels`` when every clip has one, else None (features store a missing label as "None")."""
    return None if any(lab in ("None", "") for lab in labels) else list(labels)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spread(x: np.ndarray) -> float:
    """Mean cosine distance between distinct rows of ``x`` (0: one direction; ~1: spread out)."""
    u = unit_rows(x)
    n = len(u)
    if n < 2:
        return 0.0
    total = float(np.square(u.sum(axis=0)).sum())        # = n + sum of cosines over ordered pairs i != j
    return 1.0 - (total - float(np.square(u).sum())) / (n * (n - 1))


def project(x: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """``x`` [N, D] -> [N, 2] with t-SNE or PCA (seeded, so a figure can be redrawn identically)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method not in METHODS:
        raise VizError(f"unknown projection {method!r}; use one of {', '.join(METHODS)}")
    u = unit_rows(x)
    if len(u) < 3:
        raise VizError(f"only {len(u)} videos to project; a 2-D picture needs at least 3 (use more shards or "
                       "another --split)")
    if method == "pca":
        return PCA(2, random_state=seed).fit_transform(u)
    u = PCA(min(50, *u.shape), random_state=seed).fit_transform(u)
    # t-SNE needs perplexity < N; 30 (sklearn's default) for large sets, less for small ones.
    perplexity = float(min(30.0, max(1.0, (len(u) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(u)


def embedding_panel(title: str, features: np.ndarray, labels: Sequence[str], method: str = "tsne",
                    seed: int = 0) -> EmbeddingPanel:
    """Project one checkpoint's per-video ``features`` into a panel."""
    return EmbeddingPanel(title, project(features, method, seed), known_labels(labels), spread(features))


def plot_embeddings(panels: Sequence[EmbeddingPanel], path: str | Path, title: str = "") -> Path:
    """One square panel per checkpoint, side by side, same colour per label in every panel.

    The picture is ``len(panels) * 4`` by ``4`` inches at 100 dpi (a legend, when drawn, sits
    inside the last panel's right edge, so the size does not depend on the labels).
    """
    plt = pyplot()
    classes = sorted({lab for p in panels for lab in (p.labels or [])})
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo")
    colour = {c: cmap(i / max(1, len(classes) - 1) if len(classes) > 20 else i) for i, c in enumerate(classes)}
    fig, axes = plt.subplots(1, len(panels), figsize=(PANEL_INCHES * len(panels), PANEL_INCHES), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel.labels is None:
            ax.scatter(panel.xy[:, 0], panel.xy[:, 1], s=12, color="tab:blue", alpha=0.8)
        else:
            for c in classes:
                keep = np.asarray(panel.labels) == c
                ax.scatter(panel.xy[keep, 0], panel.xy[keep, 1], s=12, color=colour[c], alpha=0.8, label=c)
        ax.set_title(f"{panel.title}\nspread {panel.spread:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if classes and len(classes) <= MAX_LEGEND:
        axes[0][-1].legend(fontsize=6, loc="upper right", framealpha=0.7, markerscale=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.03, right=0.97, bottom=0.03, top=0.82 if title else 0.87, wspace=0.08)
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
