"""Small shared helpers: seeding, device choice, parameter counts, peak memory."""

from __future__ import annotations

import os
import random
import resource
import sys

import numpy as np
import torch

from .errors import MmesidError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def flush_subnormals() -> None:
    """Treat subnormal floats (|x| < 1.2e-38) as zero in this process's CPU arithmetic (x86 FTZ/DAZ).

    CPU training produces them: in the gradients of a softmax over a whole catalogue, in Adam's second
    moments. x86 cores compute with them 10-100x slower than with normal numbers, and a few percent of
    them in one operand slow a whole matmul: flushed, SmolLM2 fine-tuning runs 1.3x faster and MiniLM's
    1.15-1.3x (BENCHMARKS.md section 13). Numbers that small change nothing else (Adam's eps is 1e-8).
    The `mmesid` command sets it first thing; library code never does, because it is state of the
    calling thread (numpy's arithmetic too): call this at the start of your own training script. A thread
    inherits the setting when it is created, so call it before torch's first parallel operation (later,
    it covers the calling thread only). GPU arithmetic is not affected.
    """
    torch.set_flush_denormal(True)


def set_cpu_threads(threads: int) -> None:
    """`threads` intra-op threads for torch on CPU; 0 leaves torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a user error, not a crash."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MmesidError(f"device {name!r} requested but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise MmesidError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None


def count_parameters(module: torch.nn.Module) -> dict[str, int | float]:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "trainable_share": trainable / max(1, total)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / (1024.0 * 1024.0)


def env_info() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
