"""crisscross.optim: parameter groups, LARC against hand computations, the LR schedule, resume."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from crisscross.losses import crisscross_loss
from crisscross.models import AudioBackbone, CrissCross, VideoBackbone
from crisscross.optim import GROUP_NAMES, LARC, apply_lr, build_optimizer, param_groups, warmup_cosine


def small_crisscross(**kw) -> CrissCross:
    """A real CrissCross of the paper's design, shrunk (one block per stage, narrow) for fast CPU steps."""
    narrow = dict(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64))
    return CrissCross(VideoBackbone(**narrow), AudioBackbone(**narrow),
                      proj_hidden=128, proj_dim=128, pred_hidden=32, **kw)


def batch(step: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(step)
    return (torch.randn(2, 3, 8, 32, 32, generator=g), torch.randn(2, 3, 8, 32, 32, generator=g),
            torch.randn(2, 1, 80, 101, generator=g), torch.randn(2, 1, 80, 101, generator=g))


def one_param(values, grad) -> nn.Parameter:
    p = nn.Parameter(torch.tensor(values, dtype=torch.float64))
    p.grad = torch.tensor(grad, dtype=torch.float64)
    return p


# --- parameter groups ---------------------------------------------------------------------------
@pytest.mark.parametrize("common", [False, True])
def test_four_groups_cover_every_parameter_once(common):
    model = small_crisscross(shared_predictor=common)
    groups = param_groups(model, base_lr=2e-4, predictor_lr=2e-3, weight_decay=1e-4)
    assert tuple(g["name"] for g in groups) == GROUP_NAMES
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    by_name = {g["name"]: g for g in groups}
    members = lambda *ms: {id(p) for m in ms for p in m.parameters()}  # noqa: E731
    assert {id(p) for p in by_name["video"]["params"]} == members(model.video_backbone, model.video_projector)
    assert {id(p) for p in by_name["audio"]["params"]} == members(model.audio_backbone, model.audio_projector)
    assert {id(p) for p in by_name["video_predictor"]["params"]} == members(model.video_predictor)
    assert [(g["lr"], g["scheduled"], g["weight_decay"]) for g in groups] == [
        (2e-4, True, 1e-4), (2e-3, False, 1e-4), (2e-4, True, 1e-4), (2e-3, False, 1e-4)]
    if common:
        assert by_name["audio_predictor"]["params"] == []
    build_optimizer(model, 2e-4, 2e-3, 1e-4, larc=True)  # an empty group is fine for Adam


# --- LARC ---------------------------------------------------------------------------------------
def test_larc_clip_mode_by_hand():
    # ||w|| = 5, ||g|| = 1: rate = 1e-3 * 5 / (1 + 0.1 * 5 + eps) ~ 1/300; clipped: rate / lr ~ 1/3.
    # Gradient with decay folded in: (g + 0.1 w) / 3 = ([0.6, 0.8] + [0.3, 0.4]) / 3 = [0.3, 0.4].
    p = one_param([3.0, 4.0], [0.6, 0.8])
    opt = LARC(torch.optim.SGD([p], lr=0.01, weight_decay=0.1), trust_coefficient=1e-3)
    opt.step()
    scale = 1e-3 * 5 / (1 + 0.1 * 5 + 1e-8) / 0.01
    assert scale == pytest.approx(1 / 3)
    assert p.tolist() == pytest.approx([3.0 - 0.01 * 0.9 * scale, 4.0 - 0.01 * 1.2 * scale], abs=1e-14)
    # the inner SGD did not decay again, and gets its weight decay back after the step
    assert opt.param_groups[0]["weight_decay"] == 0.1


def test_larc_scale_mode_by_hand():
    p = one_param([3.0, 4.0], [0.6, 0.8])
    opt = LARC(torch.optim.SGD([p], lr=0.01, weight_decay=0.1), trust_coefficient=1e-3, clip=False)
    opt.step()
    rate = 1e-3 * 5 / (1 + 0.1 * 5 + 1e-8)
    assert p.tolist() == pytest.approx([3.0 - 0.01 * 0.9 * rate, 4.0 - 0.01 * 1.2 * rate], abs=1e-12)


def test_larc_clip_leaves_small_learning_rates_alone():
    # lr below the adaptive rate: LARC is plain SGD with weight decay.
    p, q = one_param([3.0, 4.0], [0.6, 0.8]), one_param([3.0, 4.0], [0.6, 0.8])
    LARC(torch.optim.SGD([p], lr=1e-4, weight_decay=0.1)).step()
    torch.optim.SGD([q], lr=1e-4, weight_decay=0.1).step()
    assert torch.allclose(p, q, rtol=0, atol=1e-15)


def test_larc_skips_zero_norms_and_zero_lr():
    zero_grad = one_param([3.0, 4.0], [0.0, 0.0])
    zero_weight = one_param([0.0, 0.0], [0.6, 0.8])
    LARC(torch.optim.SGD([zero_grad, zero_weight], lr=0.01, weight_decay=0.1)).step()
    assert zero_grad.tolist() == [3.0, 4.0]                          # no decay either, as apex
    assert zero_weight.tolist() == pytest.approx([-0.006, -0.008])   # plain gradient, unscaled
    warm = one_param([3.0, 4.0], [0.6, 0.8])
    opt = LARC(torch.optim.SGD([warm], lr=0.0, weight_decay=0.1))    # first warm-up step
    opt.step()
    assert warm.grad.tolist() == pytest.approx([0.9, 1.2]) and warm.tolist() == [3.0, 4.0]


def test_larc_works_with_grad_scaler():
    torch.manual_seed(0)
    model = small_crisscross()
    twin = copy.deepcopy(model)
    scaled, plain = (build_optimizer(m, 1e-3, 1e-2, 1e-4, larc=True) for m in (model, twin))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    scaler.scale(crisscross_loss(**model(*batch(0)))).backward()
    scaler.step(scaled)
    scaler.update()
    crisscross_loss(**twin(*batch(0))).backward()
    plain.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


# --- schedule -----------------------------------------------------------------------------------
def test_warmup_cosine_shape():
    lr = lambda s: warmup_cosine(s, total_steps=110, warmup_steps=10, lr_start=2e-4, lr_end=1e-4)  # noqa: E731
    assert lr(0) == 0.0
    assert lr(5) == pytest.approx(1e-4)
    assert lr(10) == pytest.approx(2e-4)
    assert lr(60) == pytest.approx(1.5e-4)        # half way down the cosine
    assert lr(110) == pytest.approx(1e-4) == lr(500)
    values = [lr(s) for s in range(111)]
    assert all(a < b for a, b in zip(values[:10], values[1:11]))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert lr(35) == pytest.approx(1e-4 + 1e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine(0, 100, 0, 2e-4, 0.0) == 2e-4   # no warm-up


def test_apply_lr_moves_backbones_and_keeps_predictors_constant():
    opt = build_optimizer(small_crisscross(), 2e-4, 2e-3, 1e-4, larc=True)
    for step in (0, 3, 20):
        lr = apply_lr(opt, step, total_steps=20, warmup_steps=4, lr_start=2e-4, lr_end=0.0)
        got = {g["name"]: g["lr"] for g in opt.param_groups}
        assert got == {"video": lr, "audio": lr, "video_predictor": 2e-3, "audio_predictor": 2e-3}
    assert lr == pytest.approx(0.0)


# --- resume -------------------------------------------------------------------------------------
def train(model: CrissCross, opt, steps: range) -> None:
    model.train()
    for step in steps:
        apply_lr(opt, step, total_steps=4, warmup_steps=1, lr_start=1e-3, lr_end=0.0)
        opt.zero_grad()
        crisscross_loss(**model(*batch(step))).backward()
        opt.step()


def test_state_dicts_round_trip_for_exact_resume(larc=True):
    torch.manual_seed(0)
    straight = small_crisscross()
    resumed = copy.deepcopy(straight)
    opt = build_optimizer(straight, 1e-3, 1e-2, 1e-4, larc=larc)
    train(straight, opt, range(2))
    buffer = io.BytesIO()
    torch.save({"model": straight.state_dict(), "optim": opt.state_dict()}, buffer)
    train(straight, opt, range(2, 4))

    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(resumed, 1e-3, 1e-2, 1e-4, larc=larc)
    opt2.load_state_dict(ckpt["optim"])
    assert [g["name"] for g in opt2.param_groups] == list(GROUP_NAMES)
    train(resumed, opt2, range(2, 4))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
