"""The paper's qualitative figures as pictures of a user's own checkpoints and shards.

- :mod:`~crisscross.viz.embeddings`: Fig. 1, clip embeddings projected to 2-D (t-SNE / PCA);
- :mod:`~crisscross.viz.saliency`: Fig. 3, Grad-CAM of the video and audio backbones;
- :mod:`~crisscross.viz.neighbours`: Fig. S1 / S2, top-5 video-to-video and audio-to-audio neighbours;
- :mod:`~crisscross.viz.curves`: Fig. 4 / 5, loss per term and linear-probe accuracy against epoch;
- :mod:`~crisscross.viz.cli`: the ``crisscross viz`` command group (PNGs + ``index.md``).

Features come from :mod:`crisscross.eval.features` (the evaluation's extraction, not a copy).
"""

from __future__ import annotations


class VizError(ValueError):
    """A visualisation input the user must fix (too few clips, no such key, no logs...)."""


def pyplot():
    """matplotlib.pyplot on the Agg backend: pictures are files, never windows (servers have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
