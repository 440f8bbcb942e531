"""Where a run executes: the ranks torchrun starts, the device, the kernels' policy (cuDNN
autotuning, TF32, deterministic algorithms), mixed precision with its grad scaler, and batch norm
synchronised across ranks (torch's on GPUs, :class:`CpuSyncBatchNorm` on CPU processes).

The trainer (:mod:`crisscross.train`) calls these with plain values; nothing here knows the
training config.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_reduce


def setup_distributed(device: str, timeout: datetime.timedelta | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank); joins the process group that torchrun describes in the
    environment (nccl on GPU, gloo on CPU) when WORLD_SIZE > 1. ``timeout``: how long a rank waits
    in a collective for the others (None: torch's default, 10 minutes for NCCL)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), local


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's GPU when there is one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is visible; use --device cpu")
    return torch.device(device)


@contextlib.contextmanager
def kernel_policy(device: torch.device, deterministic: bool) -> Iterator[None]:
    """The kernels a run uses, restored afterwards.

    Deterministic: ``torch.use_deterministic_algorithms``; on CUDA with ``warn_only`` (some kernels,
    e.g. MaxPool3d's backward in the video stem, have no deterministic CUDA version: they warn
    instead of stopping the run), cuDNN's deterministic convolutions, no autotuning, no TF32, and
    the cuBLAS workspace setting deterministic matrix products need. Otherwise, on CUDA: cuDNN
    autotuning (``benchmark``: the shapes of a run are fixed, so each convolution is tuned once)
    and TF32 matrix products and convolutions for what runs in float32."""
    cudnn, cuda = torch.backends.cudnn, device.type == "cuda"
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, torch.get_float32_matmul_precision())
    if deterministic:
        if cuda:   # read when cuBLAS makes its first handle: set before the first matrix product
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=cuda)
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32 = False, True, False
        torch.set_float32_matmul_precision("highest")
    elif cuda:
        cudnn.benchmark, cudnn.allow_tf32 = True, True
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32 = saved[2:5]
        torch.set_float32_matmul_precision(saved[5])


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision (always on CPU: AMP is a GPU feature here)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 autocast needs (None otherwise: bf16 and fp32 have float32's range).

    It starts at torch's default scale (2^16) and halves it at each step whose gradients overflow,
    skipping that step: measured on the full model (random inputs), the video stem's weight
    gradient is ~0.5 at 8 clips per GPU but ~500 at 2 (batch norm over two clips), so no fixed
    initial scale fits every batch; the first steps of a small-batch run are skipped until the scale
    fits, and the trainer counts every skipped step (:func:`skipped_step`)."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


def skipped_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """1.0 when ``scaler.step(optimizer)`` just skipped the step (inf / NaN gradients at the current
    scale), else 0.0: a tensor on the device, read without a host sync. Call it between
    ``scaler.step`` and ``scaler.update`` (which forgets the step)."""
    # GradScaler has no public accessor for it; this is what its own step() reads.
    return sum(found.sum() for found in scaler._found_inf_per_device(optimizer).values()).clamp(max=1.0)


class CpuSyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all ranks, for CPU processes (gloo): torch's
    SyncBatchNorm has CUDA kernels only (and DDP refuses it on CPU). The per-channel sum, sum of
    squares and count are all-reduced with autograd, so outputs, gradients and running statistics
    equal batch norm on the concatenated batch. Same parameters and buffers as BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c, dims = x.size(1), [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() // c, dtype=x.dtype)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean          # biased, as batch norm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * n / (n - 1), m)   # unbiased, as batch norm keeps
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def convert_sync_bn(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every BatchNorm of ``module`` synchronised across ranks: torch's SyncBatchNorm on GPUs,
    :class:`CpuSyncBatchNorm` on CPU (state dicts unchanged, so checkpoints interchange)."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        synced = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_sync_bn(child, device))
    return module


def wrap_ddp(model: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel on ``device`` (``find_unused_parameters`` when some parameters get
    no gradient, e.g. one modality's backbone in a uni-modal loss ablation)."""
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters)
