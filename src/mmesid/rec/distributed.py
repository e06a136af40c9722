"""Processes and devices: the accelerator, each process's share of the data, distributed evaluation.

The same code runs on one CPU process, several CPU processes (gloo, started by torchrun) or GPUs
through `accelerate`: each process takes a disjoint slice of every global batch, DDP averages the
gradients, and validation/test users are split across processes with the ranks gathered back, so
the metrics are those of a single-process evaluation of the same weights (the ranks are put back
in the users' order before averaging, so even the floating-point sums are the same).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..artifacts.checkpoint import Dist
from ..data.split import EvalExamples
from ..errors import MmesidError
from ..eval.ranking import DEFAULT_KS, evaluate, metrics_from_ranks
from ..utils import resolve_device, set_cpu_threads
from .config import FinetuneConfig

log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without either, oneDNN emulates bf16 matmuls far below the fp32 rate."""
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(p() for p in probes if p is not None)


@dataclass
class Runtime:
    """The accelerator, the device this process computes on, and the processes taking part."""

    acc: object  # accelerate.Accelerator
    device: torch.device

    @property
    def rank(self) -> int:
        return self.acc.process_index

    @property
    def world(self) -> int:
        return self.acc.num_processes

    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    @property
    def dist(self) -> Dist:
        return Dist(self.rank, self.world, self.acc.wait_for_everyone)


def _mixed_precision(cfg: FinetuneConfig, cuda: bool) -> str:
    mp = cfg.mixed_precision
    if mp == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if mp == "fp16" and not cuda:
        raise MmesidError("mixed_precision = \"fp16\" needs a CUDA device; use \"no\" (or \"bf16\") on CPU")
    if mp == "bf16" and not cuda and not cpu_has_native_bf16():
        log.warning("mixed_precision = \"bf16\" on a CPU without AVX512-BF16 or AMX: bf16 matmuls are emulated, "
                    "training ran 2.6x slower than fp32 on such a CPU (BENCHMARKS.md section 12); "
                    "use \"no\" here")
    return mp


def setup_runtime(cfg: FinetuneConfig) -> Runtime:
    """`device` as everywhere in mmesid (auto, cpu, cuda, cuda:N); several processes use one GPU each."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    set_cpu_threads(cfg.threads)
    device = resolve_device(cfg.device)
    cpu = device.type == "cpu"
    if cfg.backbone.load_in_4bit and cpu:
        raise MmesidError("backbone.load_in_4bit needs a CUDA device (bitsandbytes); set it to false on CPU")
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if device.type == "cuda" and device.index is not None:
        if several:
            raise MmesidError(f"device {cfg.device!r} names one GPU, but several processes run (each uses "
                              "its own GPU): use device = \"cuda\" or \"auto\"")
        torch.cuda.set_device(device)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    acc = Accelerator(cpu=cpu, mixed_precision=_mixed_precision(cfg, not cpu), kwargs_handlers=[ddp])
    if not cpu and (several or device.index is None):
        device = acc.device if acc.device.index is not None else torch.device("cuda", torch.cuda.current_device())
    return Runtime(acc, device)


def micro_batch(chunk: list[int], rank: int, world: int) -> list[int]:
    """This process's share of a global micro-batch; every process must take part in each step."""
    mine = chunk[rank::world]
    return mine or chunk[:1]


def shard(examples: EvalExamples, rank: int, world: int) -> tuple[EvalExamples, np.ndarray]:
    """This process's users (every world-th; the evaluator batches them by history length) and their
    positions in `examples`."""
    idx = np.arange(rank, len(examples), world)
    part = EvalExamples([examples.histories[i] for i in idx], examples.targets[idx], examples.users[idx])
    return part, idx


def gather_var(acc, t: torch.Tensor) -> torch.Tensor:
    """Gather 1-D tensors of different lengths from all processes, in rank order."""
    n = torch.tensor([len(t)], device=t.device)
    sizes = acc.gather(n)
    pad = torch.full((int(sizes.max()),), -1, dtype=t.dtype, device=t.device)
    pad[:len(t)] = t
    allp = acc.gather(pad).view(acc.num_processes, -1)
    return torch.cat([allp[i, :int(sizes[i])] for i in range(acc.num_processes)])


def all_agree(rt: Runtime, ok: bool) -> bool:
    """True on every process iff `ok` on every process (so an error stops all of them, none hangs)."""
    if rt.world == 1:
        return ok
    flags = rt.acc.gather(torch.tensor([0 if ok else 1], device=rt.device))
    return int(flags.sum()) == 0


def distributed_evaluate(rt: Runtime, model, examples: EvalExamples, cfg: FinetuneConfig,
                         progress: bool = False, return_ranks: bool = False) -> dict:
    """Each process ranks its share of the users; ranks are gathered so the metrics cover everyone
    (with `return_ranks`, also every user's 0-based target rank in `examples`' order, under "ranks")."""
    model = rt.acc.unwrap_model(model)  # DDP's wrapper has no `scores`; evaluation needs no gradient sync
    was_training = model.training
    model.eval()
    part, where = shard(examples, rt.rank, rt.world)
    t0 = time.perf_counter()
    error = None
    try:
        merged = model.lora_merged() if cfg.eval_merge_lora else nullcontext()
        with merged, rt.acc.autocast():  # the merge itself in full precision
            m = evaluate(model, part, batch_size=cfg.eval_batch_size, max_len=cfg.max_len, device=rt.device,
                         progress=progress and rt.is_main, return_ranks=True)
        ranks = torch.as_tensor(m["ranks"], dtype=torch.long, device=rt.device)
    except MmesidError as e:  # diverged scores on this process: stop every process with the message
        error, ranks = str(e), torch.zeros(0, dtype=torch.long, device=rt.device)
    model.train(was_training)
    if not all_agree(rt, error is None):
        raise MmesidError(error or "evaluation failed on another process (the model diverged)")
    where = torch.as_tensor(where, dtype=torch.long, device=rt.device)
    if rt.world > 1:
        ranks, where = gather_var(rt.acc, ranks), gather_var(rt.acc, where)
    ordered = np.empty(len(examples), dtype=np.int64)  # back in the users' order: the same sums, bit for bit,
    ordered[where.cpu().numpy()] = ranks.cpu().numpy()  # as a single-process evaluation
    out = metrics_from_ranks(ordered, DEFAULT_KS)
    out["users"] = len(ranks)
    out["eval_seconds"] = round(time.perf_counter() - t0, 3)
    if return_ranks:
        out["ranks"] = ordered
    return out


def mean_over_processes(rt: Runtime, value: float) -> float:
    """The same number on every process (the training loss the loop checks and records)."""
    if rt.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=rt.device)
    return float(rt.acc.gather(t).mean())
