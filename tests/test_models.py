"""crisscross.models: exact parameter counts, conv5 shapes, pooling, composition, state dicts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crisscross.losses import crisscross_loss
from crisscross.models import (PREDICTORS, SIZES, AudioBackbone, CrissCross, Predictor, Projector,
                               VideoBackbone, build_backbones, build_crisscross, count_parameters)
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


@pytest.mark.parametrize("layers, predictor, total", [
    (3, "shared", 47_561_344), (2, "separate", 41_261_184), (2, "shared", 39_160_448)])
def test_table3_variants_have_the_published_parameter_counts(layers, predictor, total):
    net = build_crisscross(projector_layers=layers, predictor=predictor)
    key = {(3, "shared"): "total_shared_predictor", (2, "separate"): "total_2layer_projector",
           (2, "shared"): "total_2layer_projector_shared_predictor"}[layers, predictor]
    assert count_parameters(net) == COUNTS[key] == total
    # the same total from the parts of Tables S5-S8: a shared predictor drops one, 2 layers drop a 2048^2 layer each
    parts = (COUNTS["video_backbone"] + COUNTS["audio_backbone"]
             + 2 * COUNTS["projector" if layers == 3 else "projector_2layer"]
             + COUNTS["predictor"] * (1 if predictor == "shared" else 2))
    assert total == parts
    assert (net.audio_predictor is net.video_predictor) == (predictor == "shared")
    assert len(net.video_projector) == 3 * layers - 1          # (fc-bn-relu) x (layers - 1), fc-bn


def test_tiny_model_is_the_same_design_with_its_own_parameter_count():
    net = build_crisscross("tiny")
    assert count_parameters(net) == 1_151_840                 # ours, not the paper's (docs/training.md)
    assert (count_parameters(net.video_backbone), count_parameters(net.audio_backbone)) == (445_232, 307_888)
    assert net.video_backbone.feature_dim == net.audio_backbone.feature_dim == SIZES["tiny"].widths[-1] == 128
    assert [type(b) for b in net.video_backbone.stages[0]] == [type(b) for b in build_crisscross().video_backbone.stages[0]][:1]
    video, audio = build_backbones("tiny", pool="max")
    assert video.pool == "max" and count_parameters(audio) == 307_888
    with torch.no_grad():
        assert net.eval().audio_backbone.features(torch.randn(1, 1, 80, 201)).shape == (1, 128, 3, 7)


@pytest.mark.parametrize("kw, words", [(dict(model="huge"), "unknown --model 'huge'; use one of paper, tiny"),
                                       (dict(predictor="common"), "unknown --predictor 'common'; use one of "
                                                                  + ", ".join(PREDICTORS)),
                                       (dict(projector_layers=0), "at least one layer")])
def test_bad_model_choices_are_one_sentence(kw, words):
    with pytest.raises(ValueError, match=words):
        build_crisscross(**kw)


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
    net = small_crisscross(shared_predictor=True).eval()
    v = torch.randn(2, 3, 8, 32, 32)
    a = torch.randn(2, 1, 80, 101)
    with torch.no_grad():
        out = net(v, v, a, a)
        za = net.audio_projector(net.audio_backbone(a))
        assert torch.allclose(out["za1"], za)
        assert torch.allclose(out["pa1"], net.video_predictor(F.normalize(za, dim=1)), atol=1e-6)


def test_state_dict_round_trips_into_a_fresh_model():
    torch.manual_seed(0)
    src = small_crisscross(shared_predictor=True).eval()
    torch.manual_seed(1)
    dst = small_crisscross(shared_predictor=True).eval()
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_full_model_trains_a_step_under_autocast_on_gpu():
    from crisscross.optim import build_optimizer

    torch.manual_seed(0)
    net = build_crisscross().cuda()
    opt = build_optimizer(net, 2e-4, 2e-3, 1e-4, larc=True)
    scaler = torch.amp.GradScaler("cuda")
    before = net.video_backbone.stem[0].weight.detach().clone()
    v1, v2 = torch.randn(2, 4, 3, 8, 112, 112, device="cuda").unbind(0)
    a1, a2 = torch.randn(2, 4, 1, 80, 201, device="cuda").unbind(0)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = crisscross_loss(**net(v1, v2, a1, a2))
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss) and -1.0 <= loss.item() <= 1.0
    assert not torch.equal(before, net.video_backbone.stem[0].weight)
