"""Where a run executes: the ranks torchrun starts, the device, mixed precision, and batch norm
synchronised across ranks (torch's on GPUs, :class:`CpuSyncBatchNorm` on CPU processes).

The trainer (:mod:`crisscross.train`) calls these with plain values; nothing here knows the
training config.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_reduce


def setup_distributed(device: str) -> tuple[int, int, int]:
    """(rank, world_size, local_rank); joins the process group that torchrun describes in the
    environment (nccl on GPU, gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
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


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision (always on CPU: AMP is a GPU feature here)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


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
