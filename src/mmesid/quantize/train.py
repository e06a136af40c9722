"""Training loop of MM-RQ-VAE: k-means init, balanced assignment, dead-code re-seeding, resume, export."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError
from ..config import dump_toml
from ..io import atomic_path, load_tensors, save_tensors, write_json
from ..utils import count_parameters, env_info, peak_rss_mb, resolve_device, seed_everything
from .embeddings import ItemEmbedding
from .export import export_model
from .model import LossConfig, MMRQVAE, RQVAEConfig

log = logging.getLogger(__name__)


@dataclass
class QuantizeConfig:
    model: RQVAEConfig = field(default_factory=RQVAEConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    epochs: int = 200
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    kmeans_init: bool = True  # initialise every level by k-means on the encoded items
    kmeans_max_items: int = 0  # 0 = all items
    assign: Literal["argmin", "sinkhorn"] = "argmin"  # code assignment while training
    sk_epsilon: float = 0.01  # Sinkhorn temperature on distances scaled to [-1, 1]
    sk_iters: int = 10
    sk_levels: list[int] = field(default_factory=list)  # levels that use Sinkhorn (empty = all)
    dead_code_every: int = 5  # re-seed unused codes every k epochs (0 = never)
    dead_code_until: float = 0.7  # ... during this share of the epochs
    # keep the checkpoint with the lowest eval reconstruction term ("recon") or total loss ("loss"); the total
    # loss includes the RQ term, which grows with the latent's scale while reconstruction still improves
    select: Literal["loss", "recon"] = "recon"
    patience: int = 0  # stop after this many epochs without a better eval loss (0 = run all epochs)
    seed: int = 42
    device: str = "auto"
    threads: int = 0  # torch intra-op threads (0 = torch's default)

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("epochs must be >= 1 and batch_size >= 2")
        if self.lr <= 0:
            raise ConfigError("lr: must be > 0")
        if self.sk_epsilon <= 0:
            raise ConfigError("sk_epsilon: must be > 0")


def _prepare(embs: dict[str, ItemEmbedding]):
    tables = {m: e.table for m, e in embs.items()}
    masks = {m: e.mask for m, e in embs.items()}
    return tables, masks


def build_model(embs: dict[str, ItemEmbedding], cfg: QuantizeConfig) -> MMRQVAE:
    model = MMRQVAE({m: e.dim for m, e in embs.items()}, cfg.model)
    if cfg.model.standardize:
        for m, e in embs.items():
            model.vaes[m].fit_scaler(e.table[e.mask])
    return model


def _eval_loss(model, xn, masks, order, cfg) -> dict[str, float]:
    """Loss over all items in fixed batches, nearest-code assignment, no gradient."""
    model.eval()
    agg: dict[str, float] = {}
    nb = 0
    with torch.no_grad():
        for lo in range(0, len(order), cfg.batch_size):
            ids = order[lo:lo + cfg.batch_size]
            if len(ids) < 2:
                continue
            _, parts, _ = model.loss({m: xn[m][ids] for m in xn}, {m: masks[m][ids] for m in masks}, cfg.loss)
            for k, v in parts.items():
                agg[k] = agg.get(k, 0.0) + v
            nb += 1
    return {k: v / max(1, nb) for k, v in agg.items()}


def _unique_fraction(codes: torch.Tensor) -> float:
    valid = (codes >= 0).all(1)
    v = codes[valid].numpy()
    return float(len(np.unique(v, axis=0)) / max(1, len(v)))


def train_quantizer(embs: dict[str, ItemEmbedding], cfg: QuantizeConfig, run_dir: Path, resume: bool = True,
                    progress: bool = True) -> tuple[MMRQVAE, dict]:
    """Train MM-RQ-VAE on every item; keep the checkpoint with the lowest eval loss in run_dir."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    tables, masks = _prepare(embs)
    model = build_model(embs, cfg)
    xn = {m: model.vaes[m].normalize(tables[m]) for m in tables}
    any_mask = torch.zeros_like(next(iter(masks.values())))
    for mk in masks.values():
        any_mask |= mk
    items = torch.nonzero(any_mask).flatten()
    gen = torch.Generator().manual_seed(cfg.seed)
    eval_order = items[torch.randperm(len(items), generator=torch.Generator().manual_seed(cfg.seed + 1))]

    ckpt_path = run_dir / "checkpoint.pt"
    best_path = run_dir / "best_model.safetensors"
    start_epoch, best, best_epoch, bad, history = 0, float("inf"), -1, 0, []
    t_init = 0.0
    opt_state = None
    if resume and ckpt_path.exists():
        st = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        model.load_state_dict(st["model"])
        opt_state = st["optimizer"]
        start_epoch, best, best_epoch, bad, history = (st["epoch"] + 1, st["best"], st["best_epoch"], st["bad"],
                                                       st["history"])
        t_init = st.get("init_seconds", 0.0)
        gen.set_state(st["rng"])
        torch.set_rng_state(st["torch_rng"])
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)
    elif cfg.kmeans_init:
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            for m in model.modalities:
                idx = torch.nonzero(masks[m]).flatten()
                if cfg.kmeans_max_items and len(idx) > cfg.kmeans_max_items:
                    idx = idx[torch.randperm(len(idx), generator=gen)[: cfg.kmeans_max_items]]
                z = model.vaes[m].encoder(xn[m][idx])
                model.vaes[m].quantizer.kmeans_init(z, seed=cfg.seed)
        t_init = time.perf_counter() - t0
        log.info("k-means initialisation %.1fs", t_init)
    model.to(device)
    xn = {m: v.to(device) for m, v in xn.items()}
    masks_d = {m: v.to(device) for m, v in masks.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    assign_kw = {"assign": cfg.assign, "sk_epsilon": cfg.sk_epsilon, "sk_iters": cfg.sk_iters,
                 "sk_levels": list(cfg.sk_levels)}

    bar = tqdm(range(start_epoch, cfg.epochs), desc="mm-rq-vae", disable=not progress, initial=start_epoch,
               total=cfg.epochs)
    for epoch in bar:
        if cfg.patience and bad >= cfg.patience:
            break
        model.train()
        t0 = time.perf_counter()
        perm = items[torch.randperm(len(items), generator=gen)]
        agg: dict[str, float] = {}
        nb = 0
        for lo in range(0, len(perm), cfg.batch_size):
            ids = perm[lo:lo + cfg.batch_size]
            if len(ids) < 2:
                continue
            loss, parts, _ = model.loss({m: xn[m][ids] for m in xn}, {m: masks_d[m][ids] for m in masks_d},
                                        cfg.loss, **assign_kw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in parts.items():
                agg[k] = agg.get(k, 0.0) + v
            nb += 1
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        reseeded = None
        if cfg.dead_code_every and (epoch + 1) % cfg.dead_code_every == 0 and epoch < cfg.dead_code_until * cfg.epochs:
            reseeded = _reseed(model, xn, masks_d, opt, gen)
        ev = _eval_loss(model, xn, masks_d, eval_order, cfg)
        uniq = {}
        with torch.no_grad():
            for m in model.modalities:
                z = model.vaes[m].encoder(xn[m][masks_d[m]])
                codes, _, _ = model.vaes[m].quantizer.encode(z)
                uniq[m] = _unique_fraction(codes.cpu())
        eval_s = time.perf_counter() - t1
        rec = {"epoch": epoch, "train_loss": agg.get("loss", 0.0) / max(1, nb), "eval_loss": ev["loss"],
               "eval": ev, "unique_fraction": uniq, "train_seconds": round(train_s, 3),
               "eval_seconds": round(eval_s, 3)}
        if reseeded is not None:
            rec["reseeded"] = reseeded
        history.append(rec)
        crit = ev["loss"] if cfg.select == "loss" else ev["recon"]
        rec["criterion"] = crit
        if crit < best:
            best, best_epoch, bad = crit, epoch, 0
            save_tensors(best_path, model.state_dict())
        else:
            bad += 1
        bar.set_postfix(loss=f"{ev['loss']:.4f}", best=f"{best:.4f}",
                        uniq=",".join(f"{m}:{u:.3f}" for m, u in uniq.items()))
        st = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "best": best,
              "best_epoch": best_epoch, "bad": bad, "history": history, "rng": gen.get_state(),
              "torch_rng": torch.get_rng_state(), "init_seconds": t_init}
        tmp = ckpt_path.with_suffix(".pt.tmp")
        torch.save(st, tmp)
        tmp.replace(ckpt_path)
    bar.close()

    state, _ = load_tensors(best_path)
    model.load_state_dict(state)
    model.cpu().eval()
    return model, _summary(model, history, best, best_epoch, t_init)


@torch.no_grad()
def _reseed(model, xn, masks, opt, gen) -> dict[str, list[int]]:
    model.eval()
    out = {}
    for m in model.modalities:
        q = model.vaes[m].quantizer
        before = [cb.detach().clone() for cb in q.codebooks]
        z = model.vaes[m].encoder(xn[m][masks[m]])
        out[m] = q.reseed_dead_codes(z, generator=gen)
        for cb, old in zip(q.codebooks, before):  # forget Adam's moments of the moved codes
            moved = (cb.detach() != old).any(1)
            state = opt.state.get(cb)
            if moved.any() and state:
                for k in ("exp_avg", "exp_avg_sq"):
                    if k in state:
                        state[k][moved] = 0
    return out


def _summary(model, history, best, best_epoch, t_init) -> dict:
    losses = np.array([h.get("criterion", h["eval_loss"]) for h in history]) if history else np.zeros(0)
    epoch_s = [h["train_seconds"] + h["eval_seconds"] for h in history]
    conv_epoch = None
    if len(losses) > 1:
        first, lo = losses[0], losses.min()
        thr = lo + 0.01 * abs(first - lo)  # 99% of the total improvement reached
        conv_epoch = int(np.flatnonzero(losses <= thr)[0])
    return {
        "best_epoch": best_epoch,
        "best_criterion": best,
        "epochs_run": len(history),
        "seconds_per_epoch": round(float(np.mean(epoch_s)), 3) if epoch_s else None,
        "train_seconds_per_epoch": round(float(np.mean([h["train_seconds"] for h in history])), 3) if history else None,
        "kmeans_init_seconds": round(t_init, 2),
        "epoch_99pct": conv_epoch,
        "seconds_to_99pct": round(t_init + float(np.sum(epoch_s[: conv_epoch + 1])), 1) if conv_epoch is not None else None,
        "seconds_to_best": round(t_init + float(np.sum(epoch_s[: best_epoch + 1])), 1) if best_epoch >= 0 else None,
        "total_seconds": round(t_init + float(np.sum(epoch_s)), 1),
        "parameters": count_parameters(model),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "env": env_info(),
        "history": history,
    }


def run_training(embs: dict[str, ItemEmbedding], cfg: QuantizeConfig, run_dir: Path, export_dir: Path | None = None,
                 data=None, progress: bool = True, run_info: dict | None = None) -> dict:
    """Train, export (to run_dir/export by default), optionally measure forgetting, write metrics.json."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "config.toml") as tmp:
        tmp.write_text(dump_toml(cfg))
    info = {"command": "quantize train", "kind": "quantize",
            "emb": {m: str(Path(e.path).resolve()) + ("" if e.key == "embedding" else f":{e.key}")
                    for m, e in embs.items()}}
    info.update(run_info or {})
    write_json(run_dir / "run.json", info)
    model, summary = train_quantizer(embs, cfg, run_dir, progress=progress)
    tables, masks = _prepare(embs)
    export_dir = Path(export_dir) if export_dir else run_dir / "export"
    stats = export_model(model, tables, masks, export_dir,
                         extra_stats={"run": str(run_dir), "inputs": {m: e.path for m, e in embs.items()}})
    metrics = {"export": str(export_dir), "sids": {m: {k: s[k] for k in ("unique_fraction", "collision_rate",
                                                                       "largest_collision_group")}
                                                 for m, s in stats["modalities"].items()}}
    if data is not None:
        metrics["forgetting"] = forgetting_of_export(data, embs, export_dir)
    metrics.update(summary)
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def forgetting_of_export(data, embs: dict[str, ItemEmbedding], export_dir: Path) -> dict:
    """Kendall tau between each input table E_m and its z, z_hat, s_hat (training-prefix pairs)."""
    from ..analysis.forgetting import behaviour_target_pairs, distance_tau

    pairs = behaviour_target_pairs(data.sequences)
    t, _ = load_tensors(Path(export_dir) / "embeddings.safetensors")
    out = {}
    for m, e in embs.items():
        out[m] = {k: distance_tau(e.table, t[f"{k}.{m}"], pairs)["tau"] for k in ("z_hat", "s_hat", "z")}
    return out
