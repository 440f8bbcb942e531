"""crisscross.models: exact parameter counts, conv5 shapes, pooling, composition, state dicts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crisscross.losses import crisscross_loss
from crisscross.models import (AudioBackbone, CrissCross, Predictor, Projector, VideoBackbone,
                               build_crisscross, count_parameters)
from crisscross.paper import MODEL

COUNTS = MODEL.num_params


@pytest.fixture(scope="module")
def model() -> CrissCross:
    torch.manual_seed(0)
    return build_crisscross()


def small_crisscross(**kw) -> CrissCross:
    """A real CrissCross of the paper's design, shrunk (one block per stage, narrow) for fast CPU steps."""
    narrow = dict(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64))
    return CrissCross(VideoBackbone(**narrow), AudioBackbone(**narrow),
                      proj_hidden=128, proj_dim=128, pred_hidden=32, **kw)


def test_parameter_counts_match_the_published_architectures(model):
    assert count_parameters(model.video_backbone) == COUNTS["video_backbone"] == 15_379_136
    assert count_parameters(model.audio_backbone) == COUNTS["audio_backbone"] == 11_170_240
    assert count_parameters(model.video_projector) == COUNTS["projector"] == 9_455_616
    assert count_parameters(model.audio_projector) == COUNTS["projector"]
    assert count_parameters(model.video_predictor) == COUNTS["predictor"] == 2_100_736
    assert count_parameters(model.audio_predictor) == COUNTS["predictor"]
    assert count_parameters(model) == COUNTS["total"] == 49_662_080
    assert count_parameters(Projector(num_layers=2)) == COUNTS["projector_2layer"] == 5_255_168


def test_two_layer_projector_and_common_predictor_variants():
    two = build_crisscross(projector_layers=2, common_predictor=True)
    assert two.audio_predictor is two.video_predictor
    expected = COUNTS["total"] - 2 * (COUNTS["projector"] - COUNTS["projector_2layer"]) - COUNTS["predictor"]
    assert count_parameters(two) == expected


@pytest.mark.parametrize("shape, conv5", [
    ((8, 112, 112), (1, 4, 4)),
    ((8, 224, 224), (1, 7, 7)),
    ((32, 224, 224), (4, 7, 7)),
])
def test_video_conv5_shape(model, shape, conv5):
    with torch.no_grad():
        out = model.video_backbone.eval().features(torch.randn(1, 3, *shape))
    assert out.shape == (1, 512, *conv5)


@pytest.mark.parametrize("steps, conv5", [(201, (3, 7)), (101, (3, 4)), (501, (3, 16))])
def test_audio_conv5_shape(model, steps, conv5):
    with torch.no_grad():
        out = model.audio_backbone.eval().features(torch.randn(2, 1, 80, steps))
    assert out.shape == (2, 512, *conv5)


def test_pooling_modes_pool_the_conv5_map(model):
    torch.manual_seed(0)
    net = AudioBackbone(pool="max", layers=(1, 1, 1, 1)).eval()
    x = torch.randn(2, 1, 80, 101)
    with torch.no_grad():
        conv5 = net.features(x)
        assert torch.equal(net(x), conv5.amax(dim=(2, 3)))
        net.pool = "avg"
        assert torch.allclose(net(x), conv5.mean(dim=(2, 3)), atol=1e-6)
        net.pool = "none"
        assert torch.equal(net(x), conv5)
    assert model.video_backbone.feature_dim == model.audio_backbone.feature_dim == MODEL.feature_dim


def test_unknown_pool_is_a_clear_error():
    with pytest.raises(ValueError, match="avg, max, none"):
        VideoBackbone(pool="mean")


def test_convolutions_get_kaiming_fan_out_init():
    torch.manual_seed(0)
    stem = AudioBackbone().stem[0].weight                    # 64 x 1 x 7 x 7
    expected = math.sqrt(2.0 / (64 * 7 * 7))                  # kaiming normal, fan_out, relu
    assert stem.std().item() == pytest.approx(expected, rel=0.05)


def test_forward_returns_every_view_and_the_loss_reaches_every_parameter(model):
    torch.manual_seed(0)
    model.train()
    model.zero_grad()
    v1, v2 = torch.randn(2, 2, 3, 8, 112, 112).unbind(0)
    a1, a2 = torch.randn(2, 2, 1, 80, 201).unbind(0)
    out = model(v1, v2, a1, a2)
    assert sorted(out) == sorted(f"{k}{m}{i}" for k in "pz" for m in "va" for i in "12")
    assert all(t.shape == (2, MODEL.proj_dim) for t in out.values())
    crisscross_loss(**out).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_missing_modality_is_skipped():
    torch.manual_seed(0)
    net = small_crisscross()
    out = net(torch.randn(2, 3, 8, 32, 32), torch.randn(2, 3, 8, 32, 32))
    assert sorted(out) == ["pv1", "pv2", "zv1", "zv2"]


def test_common_predictor_sees_l2_normalised_projections():
    torch.manual_seed(0)
    net = small_crisscross(common_predictor=True).eval()
    v = torch.randn(2, 3, 8, 32, 32)
    a = torch.randn(2, 1, 80, 101)
    with torch.no_grad():
        out = net(v, v, a, a)
        za = net.audio_projector(net.audio_backbone(a))
        assert torch.allclose(out["za1"], za)
        assert torch.allclose(out["pa1"], net.video_predictor(F.normalize(za, dim=1)), atol=1e-6)


def test_state_dict_round_trips_into_a_fresh_model():
    torch.manual_seed(0)
    src = small_crisscross(common_predictor=True).eval()
    torch.manual_seed(1)
    dst = small_crisscross(common_predictor=True).eval()
    dst.load_state_dict(src.state_dict())
    v, a = torch.randn(2, 3, 8, 32, 32), torch.randn(2, 1, 80, 101)
    with torch.no_grad():
        want, got = src(v, v, a, a), dst(v, v, a, a)
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_batch_norms_convert_to_sync_batch_norm():
    # DDP training turns every BN into SyncBN; nothing in the model may hide a BN from it.
    net = nn.SyncBatchNorm.convert_sync_batchnorm(small_crisscross())
    kinds = {type(m) for m in net.modules()}
    assert nn.SyncBatchNorm in kinds
    assert not kinds & {nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d}


def test_heads_follow_tables_s7_s8():
    proj = [type(m) for m in Projector()]
    assert proj == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    assert [type(m) for m in Predictor()] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert Predictor()[0].out_features == MODEL.pred_hidden
