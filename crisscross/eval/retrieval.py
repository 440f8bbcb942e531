"""Video retrieval (appendix E.3): each test video queries the training videos by cosine similarity.

Features are the average of 10 uniformly spaced clips per video (no l2 or batch normalisation: the
paper found they do not help). A query counts as correct at k when any of its k nearest training
videos has the query's class; R@k is the share of correct queries.
"""

from __future__ import annotations

import numpy as np

from crisscross.paper import RETRIEVAL_K


def cosine_neighbours(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Indices [num_queries, k] of the ``k`` most cosine-similar gallery rows, most similar first."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sim = unit(queries) @ unit(gallery).T
    k = min(k, gallery.shape[0])
    # Stable sort on -sim: equal similarities keep gallery order, so results are reproducible.
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def recall_at_k(train_features: np.ndarray, train_labels: list[str], test_features: np.ndarray,
                test_labels: list[str], ks: tuple[int, ...] = RETRIEVAL_K) -> dict[int, float]:
    """R@k for each k: share of test videos with a same-class training video among their k nearest."""
    neighbours = cosine_neighbours(test_features, train_features, max(ks))
    hits = np.asarray(train_labels)[neighbours] == np.asarray(test_labels)[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}
