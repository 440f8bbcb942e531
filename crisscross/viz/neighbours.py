"""Fig. S1 / S2: for query videos of one split, their top-5 neighbours among another split's videos.

Features and neighbours are the retrieval protocol's (:mod:`crisscross.eval.features` +
:func:`crisscross.eval.retrieval.cosine_neighbours`): conv5 max-pooled, averaged over each video's
clips, ranked by cosine similarity. Each row of the picture is one query (black frame) and its
neighbours, most similar first, framed green when their label is the query's and red when not
(grey when the shards carry no labels). Every tile is the middle frame of the video's first sample,
or its log-mel when the video has no frames (audio-only sets), for video-to-video and
audio-to-audio retrieval alike, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from crisscross import paper
from crisscross.eval.retrieval import cosine_neighbours
from crisscross.eval.svm import ClipFeatures
from crisscross.viz import VizError, pyplot
from crisscross.viz.embeddings import unit_rows

TOP_K = paper.RETRIEVAL_K[1]       # Fig. S1 / S2 show the top-5, the R@5 of Table 7
TILE = 96                          # pixels of a tile's side, before its frame
BORDER = 6                         # pixels of the coloured frame
COLOURS = {"query": (0, 0, 0), "right": (0, 200, 0), "wrong": (220, 0, 0), "unknown": (150, 150, 150)}
DPI = 100


@dataclass
class NeighbourRow:
    """One query: its video id and label, its neighbours' ids, labels, similarities and verdicts."""

    query: str
    query_label: str | None
    neighbours: list[str]
    labels: list[str | None]
    similarity: list[float]
    verdict: list[str]                 # "right", "wrong" or "unknown" per neighbour


def _label(s: str) -> str | None:
    return None if s in ("None", "") else s


def pick_queries(num_videos: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` query indices drawn without replacement (seeded), in increasing order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_videos, size=min(count, num_videos), replace=False))


def neighbour_rows(queries: ClipFeatures, gallery: ClipFeatures, picked: Sequence[int],
                   k: int = TOP_K) -> list[NeighbourRow]:
    """The top-``k`` gallery videos of each picked query video (the query itself left out when it
    is also in the gallery, e.g. query and gallery are the same split)."""
    q, g = queries.video_means(), gallery.video_means()
    order = cosine_neighbours(q[picked], g, k + 1)
    unit_q, unit_g = unit_rows(q[picked]), unit_rows(g)
    rows = []
    for row, i in enumerate(picked):
        ids = [j for j in order[row] if gallery.keys[j] != queries.keys[i]][:k]
        mine = _label(queries.labels[i])
        labels = [_label(gallery.labels[j]) for j in ids]
        verdict = ["unknown" if mine is None or lab is None else "right" if lab == mine else "wrong"
                   for lab in labels]
        rows.append(NeighbourRow(queries.keys[i], mine, [gallery.keys[j] for j in ids], labels,
                                 [float(unit_q[row] @ unit_g[j]) for j in ids], verdict))
    return rows


def tile(clip) -> np.ndarray:
    """A square RGB uint8 picture of a clip: its middle frame, or its log-mel without frames."""
    if clip.num_frames:
        img = Image.fromarray(clip.frames([clip.num_frames // 2])[0])
    else:
        import torch

        from crisscross.data.augment import eval_audio

        audio = clip.audio()
        wave = np.zeros(max(paper.AUDIO_AUG.n_fft, len(audio)), np.float32)   # the STFT needs a window
        wave[:len(audio)] = audio
        spec = eval_audio(torch.from_numpy(wave))[0].numpy()
        lo, hi = float(spec.min()), float(spec.max())
        rgb = pyplot().get_cmap("magma")((spec[::-1] - lo) / max(hi - lo, 1e-6))[..., :3]
        img = Image.fromarray((rgb * 255).astype(np.uint8))
    return np.asarray(img.convert("RGB").resize((TILE, TILE), Image.BILINEAR))


def framed(img: np.ndarray, verdict: str) -> np.ndarray:
    """``img`` inside a ``BORDER``-pixel frame of the verdict's colour."""
    h, w = img.shape[:2]
    out = np.empty((h + 2 * BORDER, w + 2 * BORDER, 3), np.uint8)
    out[:] = COLOURS[verdict]
    out[BORDER:-BORDER, BORDER:-BORDER] = img
    return out


def plot_neighbours(rows: Sequence[NeighbourRow], tiles: dict[str, np.ndarray], path: str | Path,
                    title: str = "") -> Path:
    """Rows: queries; columns: the query (black frame), then its neighbours (green / red / grey).

    The picture is ``len(rows)`` x ``1 + k`` tiles of 1.3 inches at 100 dpi; each neighbour's
    caption is its label (or id) and cosine similarity.
    """
    plt = pyplot()
    cols = 1 + max(len(r.neighbours) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 1.3 * len(rows) + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        cells = [(row.query, "query", row.query_label or row.query, None)]
        cells += list(zip(row.neighbours, row.verdict, row.labels, row.similarity))
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c >= len(cells):
                continue
            key, verdict, label, sim = cells[c]
            ax.imshow(framed(tiles[key], verdict))
            caption = label or key
            ax.set_title(caption[:18] if sim is None else f"{caption[:10]} {sim:.3f}", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.45 / (1.3 * len(rows) + 0.4),
                        wspace=0.05, hspace=0.25)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def collect_tiles(clips: Iterable, wanted: set[str]) -> dict[str, np.ndarray]:
    """Tiles of the first sample of each wanted source video (stops once all are found)."""
    from crisscross.eval.features import video_id

    tiles: dict[str, np.ndarray] = {}
    for clip in clips:
        vid = video_id(clip)
        if vid in wanted and vid not in tiles:
            tiles[vid] = tile(clip)
            if len(tiles) == len(wanted):
                break
    missing = wanted - set(tiles)
    if missing:
        raise VizError(f"could not find the samples of {len(missing)} videos (e.g. {sorted(missing)[0]!r}) "
                       "again in the shards; did they change during the run?")
    return tiles
