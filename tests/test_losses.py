"""crisscross.losses: the negative cosine, the six symmetric pair terms and their combinations."""

from __future__ import annotations

import math

import pytest
import torch

from crisscross.losses import (GROUPS, PAIR_TERMS, TABLE1, crisscross_loss, negative_cosine,
                               pair_losses, resolve_terms)

VIEWS = ("v1", "v2", "a1", "a2")


def unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


# One 2-d vector per view at a known angle, so every cosine is cos(angle difference).
P_ANGLES = {"v1": 0.1, "v2": 0.7, "a1": 1.9, "a2": -0.4}
Z_ANGLES = {"v1": 0.3, "v2": -1.2, "a1": 2.5, "a2": 0.9}


def angle_outputs(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    out = {}
    for v in VIEWS:
        # Different lengths: the loss must only see directions.
        out["p" + v] = torch.tensor([unit(P_ANGLES[v])], dtype=torch.float64).mul(2.0).requires_grad_(requires_grad)
        out["z" + v] = torch.tensor([unit(Z_ANGLES[v])], dtype=torch.float64).mul(0.5).requires_grad_(requires_grad)
    return out


def hand_pair(x: str, y: str) -> float:
    """L_xy = D(p_x, z_y)/2 + D(p_y, z_x)/2 with D = -cos, by hand."""
    return -math.cos(P_ANGLES[x] - Z_ANGLES[y]) / 2 - math.cos(P_ANGLES[y] - Z_ANGLES[x]) / 2


def random_outputs(batch: int = 4, dim: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k + v: torch.randn(batch, dim, generator=g) for k in "pz" for v in VIEWS}


def test_negative_cosine_by_hand():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cosines 1 and 1/sqrt(2), averaged over the batch, negated
    assert negative_cosine(p, z).item() == pytest.approx(-(1 + 1 / math.sqrt(2)) / 2)
    assert negative_cosine(p, p).item() == pytest.approx(-1.0)
    assert negative_cosine(p, -p).item() == pytest.approx(1.0)


def test_crisscross_loss_by_hand():
    # Eq. 2-5: L = (L_v1v2 + L_a1a2 + L_v1a1 + L_v2a2 + L_v1a2 + L_a1v2) / 6
    pairs = [("v1", "v2"), ("a1", "a2"), ("v1", "a1"), ("v2", "a2"), ("v1", "a2"), ("a1", "v2")]
    expected = sum(hand_pair(x, y) for x, y in pairs) / 6
    assert crisscross_loss(**angle_outputs()).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("pair", PAIR_TERMS)
def test_each_pair_term_by_hand(pair):
    got = pair_losses(angle_outputs(), [pair])
    assert list(got) == [pair]
    assert got[pair].item() == pytest.approx(hand_pair(pair[:2], pair[2:]), abs=1e-12)


def test_stop_gradient_no_gradient_reaches_z():
    out = angle_outputs(requires_grad=True)
    crisscross_loss(**out).backward()
    for v in VIEWS:
        assert out["z" + v].grad is None
        assert out["p" + v].grad is not None and out["p" + v].grad.abs().sum() > 0


def test_stop_gradient_gradient_of_d_by_hand():
    # dD/dp for D = -cos(p, z) with |p| = 1: -(z/|z| - cos * p); z gets none.
    p = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z = torch.tensor([[1.0, 1.0]], requires_grad=True)
    negative_cosine(p, z).backward()
    c = 1 / math.sqrt(2)
    assert p.grad.tolist()[0] == pytest.approx([-(c - c * 1.0), -(c - 0.0)])
    assert z.grad is None


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_negative_cosine_is_symmetric_in_value(batch):
    g = torch.Generator().manual_seed(batch)
    a, b = torch.randn(batch, 16, generator=g), torch.randn(batch, 16, generator=g)
    assert torch.allclose(negative_cosine(a, b), negative_cosine(b, a))


@pytest.mark.parametrize("pair", PAIR_TERMS)
def test_pair_terms_are_symmetric(pair):
    out = random_outputs()
    x, y = pair[:2], pair[2:]
    swapped = dict(out)  # exchange the two views: the term must not change
    for k in "pz":
        swapped[k + x], swapped[k + y] = out[k + y], out[k + x]
    assert torch.allclose(pair_losses(out, [pair])[pair], pair_losses(swapped, [pair])[pair])


def test_all_groups_is_the_mean_of_the_three_group_losses():
    out = random_outputs()
    groups = {g: crisscross_loss(**out, terms=(g,)) for g in GROUPS}
    total = crisscross_loss(**out)
    assert torch.allclose(total, (groups["intra"] + groups["sync"] + groups["async"]) / 3)
    # each group is the mean of its own two pair terms
    for g, pairs in GROUPS.items():
        terms = pair_losses(out, pairs)
        assert torch.allclose(groups[g], (terms[pairs[0]] + terms[pairs[1]]) / 2)


def test_the_divisor_follows_the_number_of_enabled_terms():
    out = random_outputs()
    terms = pair_losses(out)
    want = (terms["v1v2"] + terms["v1a1"] + terms["v2a2"] + terms["v1a2"] + terms["a1v2"]) / 5
    assert torch.allclose(crisscross_loss(**out, terms=("v1v2", "sync", "async")), want)


def test_every_table1_row_is_expressible():
    sizes = {row: len(resolve_terms(terms)) for row, terms in TABLE1.items()}
    assert sizes == {"L_v1v2": 1, "L_a1a2": 1, "L_intra": 2, "L_sync": 2, "L_async": 2,
                     "L_sync + L_intra": 4, "L_sync + L_async": 4, "L_async + L_intra": 4,
                     "L_v1v2 + L_sync + L_async": 5, "L_a1a2 + L_sync + L_async": 5,
                     "L_CrissCross": 6}
    assert resolve_terms(TABLE1["L_CrissCross"]) == PAIR_TERMS


def test_terms_as_a_string_and_duplicates():
    assert resolve_terms("sync+intra") == resolve_terms(("intra", "sync")) == ("v1v2", "a1a2", "v1a1", "v2a2")
    assert resolve_terms("v1v2, intra") == ("v1v2", "a1a2")


@pytest.mark.parametrize("bad", [("intra", "cross"), ("v2v1",), "sync+", ()])
def test_invalid_terms_are_a_clear_error_listing_the_valid_names(bad):
    with pytest.raises(ValueError) as err:
        resolve_terms(bad)
    for name in (*GROUPS, *PAIR_TERMS):
        assert name in str(err.value)


def test_unimodal_terms_need_only_that_modality():
    out = random_outputs()
    video_only = {k: (t if "v" in k else None) for k, t in out.items()}
    assert torch.allclose(crisscross_loss(**video_only, terms="v1v2"), pair_losses(out, ["v1v2"])["v1v2"])
    with pytest.raises(ValueError, match="v1a1 needs pa1, za1"):
        crisscross_loss(**video_only, terms="sync")


def test_half_precision_inputs_give_a_float32_loss():
    out = {k: t.half() for k, t in random_outputs().items()}
    loss = crisscross_loss(**out)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, crisscross_loss(**random_outputs()), atol=1e-3)
