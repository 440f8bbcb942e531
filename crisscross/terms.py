"""The names of the CrissCross loss terms (paper Eq. 2-5, Table 1), without torch.

The six pair terms, their three groups and the rows of Table 1 live here so that the training
config and the command line can check ``--terms`` without importing torch; :mod:`crisscross.losses`
computes the terms and re-exports these names.
"""

from __future__ import annotations

from collections.abc import Iterable

PAIR_TERMS = ("v1v2", "a1a2", "v1a1", "v2a2", "v1a2", "a1v2")
GROUPS = {"intra": ("v1v2", "a1a2"), "sync": ("v1a1", "v2a2"), "async": ("v1a2", "a1v2")}
ALL_TERMS = ("intra", "sync", "async")
TABLE1 = {
    "L_v1v2": ("v1v2",),
    "L_a1a2": ("a1a2",),
    "L_intra": ("intra",),
    "L_sync": ("sync",),
    "L_async": ("async",),
    "L_sync + L_intra": ("sync", "intra"),
    "L_sync + L_async": ("sync", "async"),
    "L_async + L_intra": ("async", "intra"),
    "L_v1v2 + L_sync + L_async": ("v1v2", "sync", "async"),
    "L_a1a2 + L_sync + L_async": ("a1a2", "sync", "async"),
    "L_CrissCross": ALL_TERMS,
}


def resolve_terms(terms: str | Iterable[str] = ALL_TERMS) -> tuple[str, ...]:
    """Expand group names into pair terms: the enabled subset of :data:`PAIR_TERMS`, in its order."""
    names = terms.replace("+", ",").split(",") if isinstance(terms, str) else terms
    enabled = set()
    for name in (n.strip() for n in names):
        if name not in GROUPS and name not in PAIR_TERMS:
            valid = ", ".join((*GROUPS, *PAIR_TERMS))
            raise ValueError(f"unknown loss term {name!r}: use group or pair names among {valid}")
        enabled.update(GROUPS.get(name, (name,)))
    if not enabled:
        raise ValueError("no loss term enabled: give at least one of " + ", ".join((*GROUPS, *PAIR_TERMS)))
    return tuple(t for t in PAIR_TERMS if t in enabled)
