"""crisscross.runtime and the step on the GPU paths: the kernels' policy, the fp16 grad scaler and
its skipped steps, and (gpu marker) what only CUDA can show: deterministic mode, no host sync
between log rows, LARC's foreach kernels, the fp16 step of the full model.

The CPU tests stand in for the device where they can: a `torch.device("cuda")` object needs no
GPU to choose a policy, and torch's CPU GradScaler skips a step exactly as the CUDA one does.
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch

from crisscross.models import build_crisscross
from crisscross.optim import build_optimizer
from crisscross.runtime import grad_scaler, kernel_policy
from crisscross.train import train_step
from test_optim import batch, small_crisscross  # also puts tools/ on the path
from bench_train_step import loop_larc_scaling  # noqa: E402,I001

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
TERMS = ("intra", "sync", "async")


def flags() -> tuple:
    cudnn = torch.backends.cudnn
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, torch.get_float32_matmul_precision())


def test_kernel_policy_per_device_and_mode(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = flags()
    with kernel_policy(torch.device("cuda"), deterministic=False):     # fixed shapes: autotune, TF32
        assert flags()[:3] == (before[0], before[1], True) and flags()[4:] == (True, "high")
    with kernel_policy(torch.device("cuda"), deterministic=True):
        # MaxPool3d's backward has no deterministic CUDA kernel: warn instead of stopping the run
        assert flags() == (True, True, False, True, False, "highest")
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    with kernel_policy(torch.device("cpu"), deterministic=True):       # the CPU has them all: strict
        assert flags()[:2] == (True, False)
    with kernel_policy(torch.device("cpu"), deterministic=False):
        assert flags() == before                                       # nothing to tune on a CPU
    assert flags() == before                                           # every setting restored


def test_fp16_grad_scaler_skips_are_counted(monkeypatch):
    """A skipped step must not be silent: train_step reports it as amp/skipped, and exactly the
    steps it reports left the weights unchanged. torch's CPU GradScaler, started at float32's
    largest scale, overflows like the CUDA one does at 2^16 with fp16 gradients."""
    scaler = torch.amp.GradScaler("cpu", init_scale=torch.finfo(torch.float32).max / 4)
    torch.manual_seed(0)
    model = small_crisscross()
    opt = build_optimizer(model, 1e-3, 1e-2, 1e-4, larc=True)
    reported, unchanged = [], []
    for step in range(4):
        v1, v2, a1, a2 = batch(step)
        before = model.video_backbone.stem[0].weight.detach().clone()
        metrics = train_step(model, opt, scaler, [{"v1": v1, "v2": v2, "a1": a1, "a2": a2}], TERMS, None,
                             torch.device("cpu"))
        reported.append(metrics["amp/skipped"].item())
        unchanged.append(float(torch.equal(before, model.video_backbone.stem[0].weight)))
    assert reported == unchanged and reported[0] == 1.0 and 0.0 in reported, reported


def test_grad_scaler_only_for_fp16():
    assert grad_scaler(torch.bfloat16, torch.device("cuda")) is None
    assert grad_scaler(None, torch.device("cpu")) is None
    assert isinstance(grad_scaler(torch.float16, torch.device("cpu")), torch.amp.GradScaler)


# --- on a GPU ------------------------------------------------------------------------------------
def full_batch(n: int = 4, device: str = "cuda") -> dict[str, torch.Tensor]:
    """Random views of the paper's shapes: 8 x 112^2 video, 80 x 201 log-mel."""
    g = torch.Generator(device).manual_seed(0)
    v = torch.randn(2, n, 3, 8, 112, 112, device=device, generator=g)
    a = torch.randn(2, n, 1, 80, 201, device=device, generator=g)
    return {"v1": v[0], "v2": v[1], "a1": a[0], "a2": a[1]}


@pytest.mark.gpu
@gpu
def test_full_model_fp16_step_with_the_trainers_scaler_on_gpu():
    """The trainer's GradScaler at torch's default scale on the full model: the first steps may
    overflow fp16 (the stem's weight gradient at 4 clips is ~2, x 2^16 > 65504) and are skipped;
    every skip is reported, and the weights move once the scale fits."""
    torch.manual_seed(0)
    net = build_crisscross().cuda()
    opt = build_optimizer(net, 2e-4, 2e-3, 1e-4, larc=True)
    scaler = grad_scaler(torch.float16, torch.device("cuda"))
    reported, unchanged = [], []
    for _ in range(6):
        before = net.video_backbone.stem[0].weight.detach().clone()
        metrics = train_step(net, opt, scaler, [full_batch()], TERMS, torch.float16, torch.device("cuda"))
        reported.append(metrics["amp/skipped"].item())
        unchanged.append(float(torch.equal(before, net.video_backbone.stem[0].weight)))
        assert torch.isfinite(metrics["loss"]) and -1.0 <= metrics["loss"].item() <= 1.0
    assert reported == unchanged and 0.0 in reported, reported


@pytest.mark.gpu
@gpu
def test_deterministic_step_on_gpu_warns_instead_of_failing():
    torch.manual_seed(0)
    net = build_crisscross().cuda()
    opt = build_optimizer(net, 2e-4, 2e-3, 1e-4)
    with kernel_policy(torch.device("cuda"), deterministic=True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train_step(net, opt, None, [full_batch(2)], TERMS, torch.bfloat16, torch.device("cuda"))
    assert torch.isfinite(metrics["loss"])
    assert any("deterministic" in str(w.message) for w in caught), [str(w.message) for w in caught]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("amp", [torch.bfloat16, None])
def test_no_host_sync_between_log_rows_on_gpu(amp):
    """torch.cuda.set_sync_debug_mode("error") raises on any synchronising call: none in the steps
    (bf16 and fp32, Adam + LARC); the copy at the log row is the one sync."""
    from crisscross.train import host_rows

    torch.manual_seed(0)
    net = build_crisscross().cuda()
    opt = build_optimizer(net, 2e-4, 2e-3, 1e-4, larc=True)
    data = full_batch()
    train_step(net, opt, None, [data], TERMS, amp, torch.device("cuda"))     # warm-up (lazy init may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pending = [train_step(net, opt, None, [data], TERMS, amp, torch.device("cuda")) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    rows, _ = host_rows(pending, [], world=1)
    assert len(rows) == 3 and all(-1.0 <= r["loss"] <= 1.0 for r in rows)


@pytest.mark.gpu
@gpu
def test_larc_foreach_matches_the_loop_on_gpu():
    torch.manual_seed(0)
    model = small_crisscross().cuda()
    from crisscross.losses import crisscross_loss

    crisscross_loss(**model(*(x.cuda() for x in batch(0)))).backward()
    twin = copy.deepcopy(model)
    for a, b in zip(model.parameters(), twin.parameters()):
        b.grad = a.grad.clone()
    foreach, loop = (build_optimizer(m, 1e-3, 1e-2, 1e-4, larc=True) for m in (model, twin))
    for group in foreach.param_groups:
        foreach._scale_gradients(group, group["weight_decay"])
    loop_larc_scaling(loop.param_groups)
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
