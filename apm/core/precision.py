"""Devices and the precision policy, in one place, for every stage that runs a network.

The policy (what the stored numbers and the gradients need, and what speeds a GPU up):

* the **backbone** runs under bfloat16 autocast when the precision is ``bf16`` (the default on
  CUDA, where bf16 tensor cores roughly double the throughput); ``fp32`` runs it in float32;
* everything after it runs in **float32**: the heads, softmaxes, log-softmaxes, cumulative sums,
  losses, metrics, the teacher's probabilities, and every number written to Parquet. bf16 keeps
  8 bits of mantissa: a softmax over bf16 logits misses a sum of 1 by up to ~3e-3, a mean score
  in [4, 8) moves in steps of 1/32, and a loss is off by a few per cent.

``bf16`` on a CPU is allowed (``--precision bf16``) so that the bf16 path runs in the tests; it is
not the CPU default because, without AMX, bf16 kernels are slower than float32 there.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    return device


def resolve_precision(precision: str | None, device: str | torch.device) -> str:
    """``precision`` as given, or the device's default: bf16 on CUDA, fp32 elsewhere."""
    device_type = torch.device(device).type
    if precision is None:
        return "bf16" if device_type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def backbone_autocast(device: str | torch.device, precision: str | None = None) -> Iterator[None]:
    """The context a backbone's forward runs in: bf16 autocast for ``bf16`` (None: the device's
    default), plain float32 else. Whatever is computed from its outputs must go through
    :func:`fp32` first."""
    if resolve_precision(precision, device) == "bf16":
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            yield
    else:
        yield


def fp32(tensor: torch.Tensor) -> torch.Tensor:
    """A network output as float32, before any softmax, loss, metric or write."""
    return tensor.float()
