"""Stage 2 training loop: LoRA fine-tuning of the LLM recommender, early stopping, test, exports.

Runs unchanged on one CPU process, several CPU processes (gloo) or GPUs through `accelerate`: each
process takes a disjoint slice of every global batch, gradients are averaged by DDP, validation and
test users are split across processes and the metrics summed back. Checkpoints hold the trainable
weights only (safetensors) plus optimizer/scheduler/step/early-stopping state and every process's
RNG state (torch.load(weights_only=True)); the data order of an epoch is a pure function of
(seed, epoch), so a run interrupted mid-epoch resumes to exactly the same result.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..config import dump_toml, from_dict
from ..data.dataset import SequenceData
from ..data.split import EvalExamples, eval_examples
from ..errors import MmesidError
from ..eval.ranking import DEFAULT_KS, evaluate, metrics_from_ranks
from ..io import atomic_path, load_tensors, read_json, save_tensors, write_json
from ..utils import env_info, peak_rss_mb, seed_everything
from .backbone import load_backbone
from .batches import TrainExamples
from .config import MODALITIES, FinetuneConfig
from .inputs import VARIANTS, ItemInputs
from .model import LLMRecommender
from .prompt import PromptTemplate

log = logging.getLogger(__name__)

CKPT = "checkpoint"
BEST = "best_trainable.safetensors"


# ---------------------------------------------------------------------------- inputs
def load_embedding(path: str | Path, n_items: int) -> torch.Tensor:
    """An item embedding file (the project's shared reader), checked to have n_items + 1 rows."""
    from ..quantize.embeddings import load_item_embedding

    emb = load_item_embedding(path)
    if emb.n_items != n_items:
        raise MmesidError(f"{path}: expected [{n_items + 1}, d] (n_items + 1 rows, row 0 padding), "
                          f"got {list(emb.table.shape)}")
    return emb.table


def load_sid_export(folder: str | Path, n_items: int) -> tuple[dict, dict]:
    """Quantiser export -> ({modality: sids [n+1, L]}, {modality: codebook [L, S, d]})."""
    folder = Path(folder)
    sid_t, _ = load_tensors(folder / "semantic_ids.safetensors")
    cb_t, _ = load_tensors(folder / "codebooks.safetensors")
    sids, cbs = {}, {}
    for j in MODALITIES:
        if f"sid.{j}" in sid_t:
            s = sid_t[f"sid.{j}"].long()
            if s.ndim != 2 or s.shape[0] != n_items + 1:
                raise MmesidError(f"{folder / 'semantic_ids.safetensors'}: sid.{j} has shape {list(s.shape)}, "
                                  f"expected [{n_items + 1}, L]")
            if f"codebook.{j}" not in cb_t:
                raise MmesidError(f"{folder / 'codebooks.safetensors'}: codebook.{j} missing")
            c = cb_t[f"codebook.{j}"].float()
            if c.ndim != 3:
                raise MmesidError(f"{folder / 'codebooks.safetensors'}: codebook.{j} must be [L, S, d]")
            sids[j], cbs[j] = s, c
    if not sids:
        raise MmesidError(f"{folder}: no sid.c / sid.t / sid.v in semantic_ids.safetensors")
    return sids, cbs


def resolve_modalities(cfg: FinetuneConfig, given: list[str]) -> list[str]:
    spec = VARIANTS[cfg.variant]
    if spec.collaborative_only:
        if cfg.modalities and list(cfg.modalities) != ["c"]:
            raise MmesidError(f"variant {cfg.variant!r} uses the collaborative modality only; "
                              f"modalities = {cfg.modalities} does not apply")
        mods = ["c"]
    else:
        mods = list(cfg.modalities) or [j for j in MODALITIES if j in given]
    missing = [j for j in mods if j not in given]
    if missing:
        raise MmesidError(f"modalities {missing} requested but no --emb {missing[0]}=FILE given")
    if cfg.variant in ("ctrl-mm",) and "c" not in mods:
        raise MmesidError("variant 'ctrl-mm' aligns the collaborative modality with the others: needs c")
    return mods


def use_fusion(cfg: FinetuneConfig) -> bool:
    return VARIANTS[cfg.variant].fusion if cfg.fusion is None else cfg.fusion


def build_model(cfg: FinetuneConfig, data: SequenceData, emb_paths: dict[str, str], sids_dir: str | None,
                device: torch.device) -> LLMRecommender:
    """Backbone + variant inputs + target table + fusion, on `device` (new modules in float32)."""
    if cfg.variant not in VARIANTS:
        raise MmesidError(f"unknown variant {cfg.variant!r}")
    mods = resolve_modalities(cfg, list(emb_paths))
    embs = {j: load_embedding(emb_paths[j], data.n_items) for j in mods}
    sids = cbs = None
    if sids_dir:
        sids, cbs = load_sid_export(sids_dir, data.n_items)
    elif VARIANTS[cfg.variant].needs_sids:
        raise MmesidError(f"variant {cfg.variant!r} needs --sids EXPORT_DIR (the quantiser export)")
    bb = load_backbone(cfg.backbone, cfg.lora, device)
    inputs = ItemInputs(cfg.variant, mods, embs, bb.hidden_size, sids, cbs, cfg.sid_projection, seed=cfg.seed)
    prompt = PromptTemplate.build(bb.tokenizer, cfg.system_prompt, cfg.instruction)
    cache = cfg.cache_prefix and not cfg.backbone.gradient_checkpointing  # HF: no cache with checkpointing
    model = LLMRecommender(bb, inputs, data.item_frequency(), prompt, use_fusion(cfg), cfg.fusion_hidden,
                           cfg.fusion_temperature, seed=cfg.seed, cache_prefix=cache)
    if cfg.backbone.load_in_4bit:  # the quantised backbone is placed already; move only the new modules
        for name, child in model.named_children():
            if name != "llm":
                child.to(device)
        model.E_x.data = model.E_x.data.to(device)
    else:
        model.to(device)
    return model


def parameter_counts(model: torch.nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("llm.") and "lora_" not in n)
    return {"total": total, "trainable": trainable, "trainable_share": trainable / max(1, total),
            "lora": lora, "new_modules": trainable - lora, "backbone_frozen": backbone,
            "lora_share_of_backbone": lora / max(1, backbone)}


# ---------------------------------------------------------------------------- accelerate
def _mixed_precision(cfg: FinetuneConfig, cuda: bool) -> str:
    mp = cfg.mixed_precision
    if mp == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if mp == "fp16" and not cuda:
        raise MmesidError("mixed_precision = \"fp16\" needs a CUDA device; use \"no\" (or \"bf16\") on CPU")
    return mp


def make_accelerator(cfg: FinetuneConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise MmesidError(f"device {cfg.device!r} requested but CUDA is not available on this machine")
    if cfg.backbone.load_in_4bit and cpu:
        raise MmesidError("backbone.load_in_4bit needs a CUDA device (bitsandbytes); set it to false on CPU")
    mp = _mixed_precision(cfg, not cpu)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=cpu, mixed_precision=mp, kwargs_handlers=[ddp])


def _shard(examples: EvalExamples, rank: int, world: int) -> EvalExamples:
    """This process's users, sorted by history length (less padding; metrics are order-free)."""
    idx = np.arange(rank, len(examples), world)
    lens = np.array([min(len(examples.histories[i]), 10**6) for i in idx])
    idx = idx[np.argsort(lens, kind="stable")]
    return EvalExamples([examples.histories[i] for i in idx], examples.targets[idx], examples.users[idx])


def distributed_evaluate(acc, model, examples: EvalExamples, cfg: FinetuneConfig, progress: bool) -> dict:
    """Each process ranks its share of the users; ranks are gathered so metrics cover everyone."""
    model = acc.unwrap_model(model)  # DDP's wrapper has no `scores`; evaluation needs no gradient sync
    was_training = model.training
    model.eval()
    part = _shard(examples, acc.process_index, acc.num_processes)
    t0 = time.perf_counter()
    with acc.autocast():
        m = evaluate(model, part, batch_size=cfg.eval_batch_size, max_len=cfg.max_len, device=acc.device,
                     progress=progress and acc.is_main_process, return_ranks=True)
    ranks = torch.as_tensor(m["ranks"], dtype=torch.long, device=acc.device)
    if acc.num_processes > 1:
        ranks = _gather_var(acc, ranks)
    model.train(was_training)
    out = metrics_from_ranks(ranks.cpu().numpy(), DEFAULT_KS)
    out["users"] = int(len(ranks))
    out["eval_seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _gather_var(acc, t: torch.Tensor) -> torch.Tensor:
    """Gather 1-D tensors of different lengths from all processes."""
    n = torch.tensor([len(t)], device=t.device)
    sizes = acc.gather(n)
    pad = torch.full((int(sizes.max()),), -1, dtype=t.dtype, device=t.device)
    pad[:len(t)] = t
    allp = acc.gather(pad).view(acc.num_processes, -1)
    return torch.cat([allp[i, :int(sizes[i])] for i in range(acc.num_processes)])


def _valid_subset(ex: EvalExamples, n: int, seed: int) -> EvalExamples:
    if n <= 0 or n >= len(ex):
        return ex
    idx = np.sort(np.random.default_rng(seed).choice(len(ex), n, replace=False))
    return EvalExamples([ex.histories[i] for i in idx], ex.targets[idx], ex.users[idx])


# ---------------------------------------------------------------------------- checkpoints
def _rng_state(device) -> dict:
    st = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device) -> None:
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def save_checkpoint(acc, run_dir: Path, model, opt, sched, state: dict) -> None:
    ck = run_dir / CKPT
    ck.mkdir(parents=True, exist_ok=True)
    rng = _rng_state(acc.device)
    rng["step"] = torch.tensor(state["step"])
    with atomic_path(ck / f"rng_{acc.process_index}.pt") as tmp:
        torch.save(rng, tmp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_tensors(ck / "trainable.safetensors", acc.unwrap_model(model).trainable_state(),
                     metadata={"step": state["step"]})
        full = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), **state}
        if acc.scaler is not None:
            full["scaler"] = acc.scaler.state_dict()
        with atomic_path(ck / "state.pt") as tmp:
            torch.save(full, tmp)
    acc.wait_for_everyone()


def load_checkpoint(acc, run_dir: Path, model, opt, sched) -> dict | None:
    ck = run_dir / CKPT
    if not (ck / "state.pt").exists():
        return None
    st = torch.load(ck / "state.pt", weights_only=True, map_location="cpu")
    weights, meta = load_tensors(ck / "trainable.safetensors")
    if int(meta.get("step", -1)) != st["step"]:
        raise MmesidError(f"{ck}: trainable weights (step {meta.get('step')}) and state (step {st['step']}) "
                          "disagree; the checkpoint is inconsistent")
    try:
        acc.unwrap_model(model).load_trainable_state(weights)
    except RuntimeError as e:
        raise MmesidError(f"{ck}: checkpoint does not fit this model/config ({e}); use a new --out "
                          "folder or the run's own config.toml") from None
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    if acc.scaler is not None and "scaler" in st:
        acc.scaler.load_state_dict(st["scaler"])
    rng_path = ck / f"rng_{acc.process_index}.pt"
    if rng_path.exists():
        rng = torch.load(rng_path, weights_only=True)
        if int(rng["step"]) == st["step"]:
            _set_rng_state(rng, acc.device)
        else:
            log.warning("%s is from another step; dropout randomness will differ", rng_path)
    return st


# ---------------------------------------------------------------------------- training
def plan(n_examples: int, cfg: FinetuneConfig, world: int) -> dict:
    micro = math.ceil(n_examples / (cfg.batch_size * world))
    steps_per_epoch = math.ceil(micro / cfg.grad_accum)
    total = steps_per_epoch * cfg.epochs if cfg.epochs else cfg.max_steps
    if cfg.max_steps:
        total = min(total, cfg.max_steps) if cfg.epochs else cfg.max_steps
    return {"micro_per_epoch": micro, "steps_per_epoch": steps_per_epoch, "total_steps": total}


def epoch_batches(lengths: np.ndarray, cfg: FinetuneConfig, world: int, epoch: int) -> list[list[int]]:
    """The global micro-batches of one epoch: a pure function of (seed, epoch), so resume is exact.

    With length bucketing, a random permutation is cut into pools of 50 micro-batches, each pool is
    sorted by prompt length and cut into micro-batches, and the micro-batches are shuffled again.
    """
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    perm = torch.randperm(len(lengths), generator=gen).numpy()
    g = cfg.batch_size * world
    if not cfg.length_bucketing:
        return [perm[i:i + g].tolist() for i in range(0, len(perm), g)]
    pool = g * 50
    batches = []
    for lo in range(0, len(perm), pool):
        part = perm[lo:lo + pool]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + g].tolist() for i in range(0, len(part), g)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def _micro_batch(chunk: list[int], rank: int, world: int) -> list[int]:
    mine = chunk[rank::world]
    return mine or chunk[:1]  # every process must take part in each step


def train_finetune(data: SequenceData, cfg: FinetuneConfig, run_dir: str | Path, emb_paths: dict[str, str],
                   sids_dir: str | None = None, progress: bool = True, stop_after_steps: int | None = None,
                   evaluate_test: bool = True) -> dict:
    """Train, validate, early-stop, test the best weights and export embeddings; returns metrics.

    `stop_after_steps` ends the process after that many optimizer steps as if it were killed right
    after a checkpoint (used to test exact resume).
    """
    from transformers import get_cosine_schedule_with_warmup

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    acc = make_accelerator(cfg)
    rank, world = acc.process_index, acc.num_processes
    seed_everything(cfg.seed)
    t_start = time.perf_counter()
    model = build_model(cfg, data, emb_paths, sids_dir, acc.device)
    counts = parameter_counts(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    examples = TrainExamples(data.sequences, cfg.max_len, cfg.train_scheme)
    pl = plan(len(examples), cfg, world)
    sched = get_cosine_schedule_with_warmup(opt, min(cfg.warmup_steps, pl["total_steps"]), pl["total_steps"])
    model, opt = acc.prepare(model, opt)
    core = acc.unwrap_model(model)
    valid = _valid_subset(eval_examples(data.sequences, "valid"), cfg.valid_users, cfg.seed)

    state = {"step": 0, "best": -1.0, "best_step": -1, "bad": 0, "history": [], "valid_seconds": 0.0,
             "stopped_early": False}
    loaded = load_checkpoint(acc, run_dir, model, opt, sched)
    if loaded is None and (run_dir / BEST).exists() and acc.is_main_process:
        (run_dir / BEST).unlink()  # left over from an earlier, unrelated run in this folder
    acc.wait_for_everyone()
    if loaded is not None:
        state = {k: loaded[k] for k in state}
        if acc.is_main_process:
            log.info("resumed %s at step %d / %d", run_dir, state["step"], pl["total_steps"])
    if acc.is_main_process:
        if not (run_dir / "run.json").exists():  # library use; the CLI writes a fuller one
            write_json(run_dir / "run.json", {"kind": "finetune", "emb": dict(emb_paths), "sids": sids_dir,
                                              "variant": cfg.variant})
        if not (run_dir / "config.toml").exists():
            with atomic_path(run_dir / "config.toml") as tmp:
                tmp.write_text(dump_toml(cfg))
        log.info("variant %s: %d training prompts (%d targets), %d steps/epoch, %d steps, %d process(es); "
                 "trainable %d of %d parameters (%.3f%%)", cfg.variant, len(examples), examples.n_targets,
                 pl["steps_per_epoch"], pl["total_steps"], world, counts["trainable"], counts["total"],
                 100 * counts["trainable_share"])

    def validate_and_track() -> None:
        m = distributed_evaluate(acc, model, valid, cfg, progress=False)
        score = m[cfg.metric]
        state["history"].append({"step": state["step"], **{k: v for k, v in m.items() if "@" in k},
                                 "eval_seconds": m["eval_seconds"]})
        if score > state["best"]:
            state["best"], state["best_step"], state["bad"] = score, state["step"], 0
            if acc.is_main_process:
                save_tensors(run_dir / BEST, core.trainable_state(), metadata={"step": state["step"]})
        else:
            state["bad"] += 1
        if acc.is_main_process:
            log.info("step %d valid %s %.4f (best %.4f @ %d)", state["step"], cfg.metric, score, state["best"],
                     state["best_step"])
        acc.wait_for_everyone()

    ex_lengths = np.array([len(h) for h in examples.hist])
    cur_epoch, batches = -1, []
    model.train()
    eval_every = cfg.eval_every or pl["steps_per_epoch"]
    running, n_run, t0 = 0.0, 0, time.perf_counter()
    bar = None
    if progress and acc.is_main_process:
        from tqdm import tqdm

        bar = tqdm(total=pl["total_steps"], initial=state["step"], desc=f"finetune {cfg.variant}", leave=False)
    while state["step"] < pl["total_steps"] and not state["stopped_early"]:
        epoch, k = divmod(state["step"], pl["steps_per_epoch"])
        if epoch != cur_epoch:
            batches, cur_epoch = epoch_batches(ex_lengths, cfg, world, epoch), epoch
        first = k * cfg.grad_accum
        last = min(first + cfg.grad_accum, pl["micro_per_epoch"])
        n_micro = last - first
        for m in range(first, last):
            b = examples.batch(_micro_batch(batches[m], rank, world))
            b = {key: v.to(acc.device) for key, v in b.items()}
            sync = m == last - 1
            ctx = acc.no_sync(model) if not sync and world > 1 else _null()
            with ctx:
                with acc.autocast():
                    out = model(**b, loss=cfg.loss, contrastive_weight=cfg.contrastive_weight,
                                contrastive_temperature=cfg.contrastive_temperature)
                acc.backward(out["loss"] / n_micro)
            running += float(out["loss"].detach())
            n_run += 1
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running / max(1, n_run):.3f}")
        if state["step"] % 50 == 0 and acc.is_main_process:
            log.info("step %d loss %.4f lr %.2e (%.1f s/step)", state["step"], running / max(1, n_run),
                     sched.get_last_lr()[0], (time.perf_counter() - t0) / 50)
            running, n_run, t0 = 0.0, 0, time.perf_counter()
        done = state["step"] >= pl["total_steps"]
        if state["step"] % eval_every == 0 or done:
            t_eval = time.perf_counter()
            validate_and_track()
            state["valid_seconds"] += time.perf_counter() - t_eval
            if cfg.patience and state["bad"] >= cfg.patience:
                state["stopped_early"] = True
        if state["step"] % cfg.save_every == 0 or done or state["stopped_early"]:
            save_checkpoint(acc, run_dir, model, opt, sched, state)
        if stop_after_steps is not None and state["step"] >= stop_after_steps and not done:
            save_checkpoint(acc, run_dir, model, opt, sched, state)
            if bar is not None:
                bar.close()
            return {"interrupted_at_step": state["step"]}
    if bar is not None:
        bar.close()
    train_wall = time.perf_counter() - t_start

    # best weights -> full validation and test on every user, exports
    if (run_dir / BEST).exists():
        w, _ = load_tensors(run_dir / BEST)
        core.load_trainable_state(w)
    metrics = {"model": cfg.variant, "backbone": core.backbone_name, "modalities": core.inputs.modalities,
               "fusion": core.use_fusion, "prompt": core.prompt.text, "steps": state["step"],
               "plan": pl, "best_step": state["best_step"], "stopped_early": state["stopped_early"],
               "processes": world, "train_prompts": len(examples), "train_targets": examples.n_targets,
               "parameters": counts, "history": state["history"]}
    if evaluate_test:
        best = [h for h in state["history"] if h["step"] == state["best_step"]]
        if best:  # the best weights were validated already (valid_users sample, or all users)
            metrics["valid"] = {**{k: v for k, v in best[-1].items() if "@" in k}, "users": len(valid)}
        else:
            metrics["valid"] = distributed_evaluate(acc, model, valid, cfg, progress)
        metrics["test"] = distributed_evaluate(acc, model, eval_examples(data.sequences, "test"), cfg, progress)
    metrics["train_wall_seconds"] = round(train_wall, 1)  # this process's session, incl. validations
    metrics["valid_seconds_during_training"] = round(state["valid_seconds"], 1)
    metrics["total_wall_seconds"] = round(time.perf_counter() - t_start, 1)
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if acc.device.type == "cuda":
        metrics["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(acc.device) / 2**20, 1)
    metrics["env"] = {**env_info(), "processes": world, "mixed_precision": str(acc.mixed_precision)}
    if acc.is_main_process:
        export_embeddings(core, run_dir, cfg)
        write_json(run_dir / "metrics.json", metrics)
    acc.wait_for_everyone()
    return metrics


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def export_embeddings(model: LLMRecommender, run_dir: Path, cfg: FinetuneConfig) -> None:
    """History-item input embeddings of all items, E_x, and the fine-tuned quantised embeddings."""
    model.eval()
    n = model.inputs.n_rows - 1
    with torch.no_grad():
        x = model.inputs.all_items().float().cpu()  # [n+1, span, D]
        x = x[:, 0] if x.shape[1] == 1 else x.flatten(1)  # concat: the item's span side by side
        x[0] = 0
        meta = {"modality": "llm-input", "encoder": f"finetune:{cfg.variant}", "dim": x.shape[1], "n_items": n}
        save_tensors(run_dir / "item_input_embeddings.safetensors", {"embedding": x}, metadata=meta)
        ex = model.E_x.detach().float().cpu().clone()
        ex[0] = 0
        save_tensors(run_dir / "target_embeddings.safetensors", {"embedding": ex},
                     metadata={**meta, "modality": "llm-target", "dim": ex.shape[1]})
        if len(model.inputs.sid):
            ids = torch.arange(n + 1, device=model.E_x.device)
            sq = {f"quantised.{j}": m.quantised(ids).float().cpu() for j, m in model.inputs.sid.items()}
            save_tensors(run_dir / "sid_embeddings.safetensors", sq,
                         metadata={"note": "sum of the fine-tuned SID embeddings per item, latent space",
                                   "n_items": n})


# ---------------------------------------------------------------------------- loading a run
def load_scorer(run_dir: str | Path, data: SequenceData, device):
    """For `mmesid evaluate`: rebuild the model of a finetune run with its best trainable weights."""
    import tomllib

    run_dir = Path(run_dir)
    info = read_json(run_dir / "run.json")
    cfg_path = run_dir / "config.toml"
    if not cfg_path.exists():
        raise MmesidError(f"{cfg_path}: missing")
    cfg = from_dict(FinetuneConfig, tomllib.loads(cfg_path.read_text()))
    weights = run_dir / BEST
    if not weights.exists():
        weights = run_dir / CKPT / "trainable.safetensors"
    if not weights.exists():
        raise MmesidError(f"{run_dir}: no trained weights ({BEST} or {CKPT}/trainable.safetensors)")
    device = torch.device(device) if not isinstance(device, torch.device) else device
    model = build_model(cfg, data, info["emb"], info.get("sids"), device)
    w, _ = load_tensors(weights)
    model.load_trainable_state(w)
    model.eval()
    return model, cfg.max_len

