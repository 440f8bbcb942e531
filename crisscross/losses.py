"""The CrissCross objective (paper Eq. 1-5): SimSiam's negative cosine between views and modalities.

``D(p, z) = -cos(p, stopgrad(z))`` averaged over the batch (Eq. 1). A *pair term* compares two
views symmetrically, ``L_xy = D(p_x, z_y) / 2 + D(p_y, z_x) / 2``. There are six:

- intra-modal (Eq. 2): ``v1v2``, ``a1a2``
- synchronous cross-modal (Eq. 3): ``v1a1``, ``v2a2``
- asynchronous cross-modal (Eq. 4): ``v1a2``, ``a1v2``

The loss is the mean of the enabled pair terms, so with every group enabled it is
``(L_intra + L_sync + L_async) / 3`` (Eq. 5) where each group is the mean of its two terms. (The
paper's pseudocode has a stray ``Lv2a2`` inside ``L_sync``: a typo, not reproduced.)

``terms`` takes group names and single pairs, mixed freely, so each row of the paper's Table 1 is
one value (also in :data:`TABLE1`):

=========================================  ==============================
Table 1 row                                ``terms``
=========================================  ==============================
L_v1v2                                     ``("v1v2",)``
L_a1a2                                     ``("a1a2",)``
L_intra                                    ``("intra",)``
L_sync                                     ``("sync",)``
L_async                                    ``("async",)``
L_sync + L_intra                           ``("sync", "intra")``
L_sync + L_async                           ``("sync", "async")``
L_async + L_intra                          ``("async", "intra")``
L_v1v2 + L_sync + L_async                  ``("v1v2", "sync", "async")``
L_a1a2 + L_sync + L_async                  ``("a1a2", "sync", "async")``
L_CrissCross                               ``("intra", "sync", "async")``
=========================================  ==============================

A string is also accepted, with names separated by ``+`` or ``,`` (``"sync+intra"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

# The term names live in a torch-free module (the CLI checks --terms with them); re-exported here.
from crisscross.terms import ALL_TERMS, GROUPS, PAIR_TERMS, TABLE1, resolve_terms  # noqa: F401


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """``D(p, z)``: minus the cosine similarity of ``p`` and ``stopgrad(z)`` along the last axis, batch mean."""
    # At least float32: under autocast p and z may be half precision, and the norms overflow there.
    dtype = torch.promote_types(p.dtype, torch.float32)
    return -F.cosine_similarity(p.to(dtype), z.detach().to(dtype), dim=-1).mean()


def pair_loss(out: Mapping[str, Tensor], pair: str) -> Tensor:
    """One symmetric pair term, e.g. ``pair="v1a2"``: ``D(p_v1, z_a2) / 2 + D(p_a2, z_v1) / 2``."""
    x, y = pair[:2], pair[2:]
    missing = [k for k in (f"p{x}", f"z{x}", f"p{y}", f"z{y}") if out.get(k) is None]
    if missing:
        raise ValueError(f"loss term {pair} needs {', '.join(missing)}, which the model output lacks: "
                         f"give the model both views it compares, or leave {pair} out of the terms")
    return negative_cosine(out[f"p{x}"], out[f"z{y}"]) / 2 + negative_cosine(out[f"p{y}"], out[f"z{x}"]) / 2


def pair_losses(out: Mapping[str, Tensor], terms: str | Iterable[str] = ALL_TERMS) -> dict[str, Tensor]:
    """Each enabled pair term from a model output dict (``zv1 ... pa2``), keyed by pair name."""
    return {pair: pair_loss(out, pair) for pair in resolve_terms(terms)}


def crisscross_loss(pv1: Tensor | None, pv2: Tensor | None, pa1: Tensor | None, pa2: Tensor | None,
                    zv1: Tensor | None, zv2: Tensor | None, za1: Tensor | None, za2: Tensor | None,
                    terms: str | Iterable[str] = ALL_TERMS) -> Tensor:
    """The CrissCross loss: the mean of the enabled pair terms (Eq. 5 with every group enabled).

    Views that no enabled term uses may be ``None``. ``crisscross_loss(**model(v1, v2, a1, a2))``
    works since the model output's keys are these argument names.
    """
    out = dict(pv1=pv1, pv2=pv2, pa1=pa1, pa2=pa2, zv1=zv1, zv2=zv2, za1=za1, za2=za2)
    return torch.stack(list(pair_losses(out, terms).values())).mean()
