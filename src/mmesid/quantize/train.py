"""Training of MM-RQ-VAE on the shared `training.TrainingLoop`, and the export of its semantic IDs.

One loop step is one batch of one epoch. The epoch's item order is drawn from the run's own
generator at the epoch's first step; after its last step the unused codes are re-seeded (on the
epochs `dead_code_every` / `dead_code_until` select), then the epoch is validated: the eval loss
over all items in a fixed order and the share of unique SID tuples. The best weights are those with
the lowest eval reconstruction term (or total loss, per `select`). K-means initialisation happens
once, before the loop, and only when the run starts fresh: a resumed run continues from its
checkpoint to exactly the result of an uninterrupted one. The loop itself (early stop, best
weights, checkpoints, divergence checks) is shared with the other stages.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..artifacts.embeddings import (
    ItemEmbedding,
    check_fingerprint,
    common_fingerprint,
    read_modalities,
    split_file_key,
)
from ..artifacts.outputs import check_output_folder
from ..artifacts.runs import RunDir
from ..artifacts.sid_export import KIND as EXPORT_KIND
from ..artifacts.sid_export import write_sid_export
from ..config import bounded, load_config
from ..errors import ConfigError, MmesidError
from ..io import load_weights, state_dict_error
from ..training.loop import LoopSettings, LoopState, TrainingLoop
from ..utils import (
    count_parameters,
    env_info,
    peak_rss_mb,
    resolve_device,
    seed_everything,
    set_cpu_threads,
)
from .export import export_contents
from .model import MMRQVAE, LossConfig, RQVAEConfig
from .rq import code_clusters

log = logging.getLogger(__name__)

KIND = "quantize"
BEST = "best.safetensors"
METRIC = "criterion"  # the validation value that selects the best weights ("recon" or "loss", per `select`)


@dataclass
class QuantizeConfig:
    model: RQVAEConfig = field(default_factory=RQVAEConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    epochs: int = bounded(200, ge=1)
    batch_size: int = bounded(1024, ge=2)  # a batch needs 2 items (MMD, InfoNCE); a last batch of 1 is skipped
    lr: float = bounded(1e-3, gt=0.0)
    weight_decay: float = bounded(0.0, ge=0.0)
    kmeans_init: bool = True  # initialise every level by k-means on the encoded items
    kmeans_max_items: int = bounded(0, ge=0)  # 0 = all items
    assign: Literal["argmin", "sinkhorn"] = "argmin"  # code assignment while training
    sk_epsilon: float = bounded(0.01, gt=0.0)  # Sinkhorn temperature on distances scaled to [-1, 1]
    sk_iters: int = bounded(10, ge=1)
    sk_levels: list[int] = field(default_factory=list)  # levels that use Sinkhorn (empty = all)
    dead_code_every: int = bounded(5, ge=0)  # re-seed unused codes every k epochs (0 = never)
    dead_code_until: float = bounded(0.7, ge=0.0, le=1.0)  # ... during this share of the epochs
    # keep the weights with the lowest eval reconstruction term ("recon") or total loss ("loss"); the total
    # loss includes the RQ term, which grows with the latent's scale while reconstruction still improves
    select: Literal["loss", "recon"] = "recon"
    patience: int = bounded(0, ge=0)  # stop after this many epochs without a better eval value (0 = run all)
    seed: int = bounded(42, ge=0)
    device: str = "auto"
    threads: int = bounded(0, ge=0)  # torch intra-op threads (0 = torch's default)
    # LETTER's collaborative regulariser (loss.cf_weight > 0): the items' collaborative embeddings, e.g. our
    # SASRec's E_c; their size must be model.latent_dim
    cf_emb: str = ""

    def validate(self) -> None:
        if self.loss.cf_weight > 0 and not self.cf_emb:
            raise ConfigError("loss.cf_weight > 0 (LETTER's collaborative regulariser) needs cf_emb = \"E_c file\"")
        levels = len(self.model.codebook_sizes)
        bad = [lv for lv in self.sk_levels if not 0 <= lv < levels]
        if bad:
            raise ConfigError(f"sk_levels: level {bad[0]} does not exist (model.codebook_sizes has {levels} "
                              f"levels, numbered 0..{levels - 1})")


def build_model(embs: dict[str, ItemEmbedding], cfg: QuantizeConfig) -> MMRQVAE:
    model = MMRQVAE({m: e.dim for m, e in embs.items()}, cfg.model)
    if cfg.model.standardize:
        for m, e in embs.items():
            model.vaes[m].fit_scaler(e.table[e.mask])
    return model


def unique_fraction(codes: torch.Tensor) -> float:
    """Share of distinct SID tuples among the rows of `codes` [N, L] without a -1."""
    valid = (codes >= 0).all(1)
    v = codes[valid].cpu().numpy()
    return float(len(np.unique(v, axis=0)) / max(1, len(v)))


@torch.no_grad()
def kmeans_init(model: MMRQVAE, xn: dict, masks: dict, cfg: QuantizeConfig, gen: torch.Generator) -> float:
    """Initialise every level by k-means on the encoded items (a subset drawn from `gen` if capped)."""
    t0 = time.perf_counter()
    model.eval()
    for m in model.modalities:
        idx = torch.nonzero(masks[m]).flatten()
        if cfg.kmeans_max_items and len(idx) > cfg.kmeans_max_items:
            idx = idx[torch.randperm(len(idx), generator=gen)[: cfg.kmeans_max_items]]
        z = model.vaes[m].encoder(xn[m][idx])
        model.vaes[m].quantizer.kmeans_init(z, seed=cfg.seed)
    seconds = time.perf_counter() - t0
    log.info("k-means initialisation %.1fs", seconds)
    return seconds


@torch.no_grad()
def reseed_dead_codes(model: MMRQVAE, xn: dict, masks: dict, opt, gen: torch.Generator) -> dict[str, list[int]]:
    """Move unused codes onto random residuals (all items) and forget Adam's moments of the moved codes."""
    model.eval()
    out = {}
    for m in model.modalities:
        q = model.vaes[m].quantizer
        before = [cb.detach().clone() for cb in q.codebooks]
        z = model.vaes[m].encoder(xn[m][masks[m]])
        out[m] = q.reseed_dead_codes(z, generator=gen)
        for cb, old in zip(q.codebooks, before):
            moved = (cb.detach() != old).any(1)
            state = opt.state.get(cb)
            if moved.any() and state:
                for k in ("exp_avg", "exp_avg_sq"):
                    if k in state:
                        state[k][moved] = 0
    return out


class QuantizeTask:
    """MM-RQ-VAE's part of the training loop: one AdamW step on a batch of items, eval loss over all items."""

    def __init__(self, model: MMRQVAE, xn: dict, masks: dict, cfg: QuantizeConfig, device: torch.device,
                 gen: torch.Generator, init_seconds: float = 0.0):
        self.model, self.cfg, self.device, self.gen = model, cfg, device, gen
        any_mask = torch.zeros_like(next(iter(masks.values())))
        for mk in masks.values():
            any_mask |= mk
        self.items = torch.nonzero(any_mask).flatten()
        # the validation order is fixed for the whole run, independent of the training order
        self.eval_order = self.items[torch.randperm(len(self.items),
                                                    generator=torch.Generator().manual_seed(cfg.seed + 1))]
        self.xn = {m: v.to(device) for m, v in xn.items()}
        self.masks = {m: v.to(device) for m, v in masks.items()}
        n, bs = len(self.items), cfg.batch_size
        self.steps_per_epoch = n // bs + (1 if n % bs >= 2 else 0)  # a last batch of one item is skipped
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.assign_kw = {"assign": cfg.assign, "sk_epsilon": cfg.sk_epsilon, "sk_iters": cfg.sk_iters,
                          "sk_levels": list(cfg.sk_levels)}
        self.perm: torch.Tensor | None = None
        self.cf = self._cf_table(len(next(iter(xn.values()))) - 1)
        self.div: dict[str, list[torch.Tensor]] | None = None  # LETTER: code clusters, refreshed every epoch
        self.init_seconds = init_seconds  # k-means time, kept across resumes for the summary
        self.epoch_seconds = 0.0
        self.reseeded: dict | None = None

    def _cf_table(self, n_items: int) -> torch.Tensor | None:
        if self.cfg.loss.cf_weight <= 0:
            return None
        from ..artifacts.embeddings import read_item_embedding

        e = read_item_embedding(self.cfg.cf_emb, n_items=n_items)
        if e.dim != self.cfg.model.latent_dim:
            raise ConfigError(f"cf_emb {self.cfg.cf_emb}: {e.dim}-d, but the latent (model.latent_dim) is "
                              f"{self.cfg.model.latent_dim}-d; LETTER compares them by dot product")
        return e.table.to(self.device)

    def _clusters(self, epoch: int) -> dict[str, list[torch.Tensor]] | None:
        lc = self.cfg.loss
        if lc.diversity_weight <= 0:
            return None
        return {m: [code_clusters(cb, lc.diversity_clusters, self.cfg.seed + 1000 * epoch + level)
                    for level, cb in enumerate(vae.quantizer.codebooks)] for m, vae in self.model.vaes.items()}

    def _batch(self, ids: torch.Tensor) -> tuple[dict, dict]:
        return {m: x[ids] for m, x in self.xn.items()}, {m: mk[ids] for m, mk in self.masks.items()}

    def _reseed_due(self, epoch: int) -> bool:
        c = self.cfg
        return bool(c.dead_code_every) and (epoch + 1) % c.dead_code_every == 0 and epoch < c.dead_code_until * c.epochs

    def train_step(self, step: int) -> float:
        t0 = time.perf_counter()
        k, epoch = step % self.steps_per_epoch, step // self.steps_per_epoch
        if k == 0 or self.perm is None:  # a new epoch: a new order from the run's own generator
            self.perm = self.items[torch.randperm(len(self.items), generator=self.gen)]
            self.epoch_seconds = 0.0
            self.div = self._clusters(epoch)
        bs = self.cfg.batch_size
        self.model.train()
        ids = self.perm[k * bs:(k + 1) * bs]
        loss, parts, _ = self.model.loss(*self._batch(ids), self.cfg.loss, cf=None if self.cf is None else self.cf[ids],
                                         diversity=self.div, **self.assign_kw)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if k == self.steps_per_epoch - 1 and math.isfinite(parts["loss"]) and self._reseed_due(epoch):
            self.reseeded = reseed_dead_codes(self.model, self.xn, self.masks, self.opt, self.gen)
        self.epoch_seconds += time.perf_counter() - t0
        return parts["loss"]

    @torch.no_grad()
    def eval_loss(self) -> dict[str, float]:
        """Mean loss parts over all items in fixed batches, nearest-code assignment."""
        self.model.eval()
        agg: dict[str, float] = {}
        nb = 0
        for lo in range(0, len(self.eval_order), self.cfg.batch_size):
            ids = self.eval_order[lo:lo + self.cfg.batch_size]
            if len(ids) < 2:
                continue
            _, parts, _ = self.model.loss(*self._batch(ids), self.cfg.loss, cf=None if self.cf is None else self.cf[ids])
            for key, v in parts.items():
                agg[key] = agg.get(key, 0.0) + v
            nb += 1
        return {key: v / max(1, nb) for key, v in agg.items()}

    @torch.no_grad()
    def unique_fractions(self) -> dict[str, float]:
        self.model.eval()
        out = {}
        for m in self.model.modalities:
            z = self.model.vaes[m].encoder(self.xn[m][self.masks[m]])
            out[m] = unique_fraction(self.model.vaes[m].quantizer.encode(z)[0])
        return out

    def validate(self, step: int) -> dict:
        t0 = time.perf_counter()
        ev = self.eval_loss()
        out = {METRIC: ev["loss"] if self.cfg.select == "loss" else ev["recon"], "eval_loss": ev["loss"],
               "eval": ev, "unique_fraction": self.unique_fractions(),
               "train_seconds": round(self.epoch_seconds, 3)}
        out["eval_seconds"] = round(time.perf_counter() - t0, 3)
        if self.reseeded is not None:
            out["reseeded"], self.reseeded = self.reseeded, None
        return out

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "perm": self.perm, "init_seconds": self.init_seconds,
                "epoch_seconds": self.epoch_seconds, "reseeded": self.reseeded, "div": self.div}

    def load_state_dict(self, st: dict) -> None:
        self.load_best_weights(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        for g in self.opt.param_groups:  # a resume with --allow-config-change runs with the new values
            g["lr"], g["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
        self.gen.set_state(st["generator"])
        self.perm = st["perm"]
        self.init_seconds, self.epoch_seconds = st["init_seconds"], st["epoch_seconds"]
        self.reseeded = st["reseeded"]
        self.div = st.get("div")

    def best_weights(self) -> dict:
        return self.model.state_dict()

    def load_best_weights(self, w: dict) -> None:
        try:
            self.model.load_state_dict(w)
        except RuntimeError as e:
            raise MmesidError(f"saved weights do not fit these inputs/config ({state_dict_error(e)})") from None


def summarize(model: MMRQVAE, st: LoopState, steps_per_epoch: int, init_seconds: float) -> dict:
    """Best epoch (0-based), time to 99% of the improvement, time to the best epoch, resources."""
    history = st.history
    crit = np.array([h[METRIC] for h in history])
    epoch_s = [h["train_seconds"] + h["eval_seconds"] for h in history]
    best_epoch = st.best_step // steps_per_epoch - 1 if st.best_step > 0 else -1
    conv = None
    if len(crit) > 1:
        thr = crit.min() + 0.01 * abs(crit[0] - crit.min())  # 99% of the total improvement reached
        conv = int(np.flatnonzero(crit <= thr)[0])
    return {
        "best_epoch": best_epoch,
        "best_criterion": st.best,
        "select_metric": METRIC,
        "epochs_run": len(history),
        "stopped_early": st.stopped_early,
        "seconds_per_epoch": round(float(np.mean(epoch_s)), 3) if epoch_s else None,
        "train_seconds_per_epoch": round(float(np.mean([h["train_seconds"] for h in history])), 3) if history else None,
        "kmeans_init_seconds": round(init_seconds, 2),
        "epoch_99pct": conv,
        "seconds_to_99pct": round(init_seconds + float(np.sum(epoch_s[: conv + 1])), 1) if conv is not None else None,
        "seconds_to_best": round(init_seconds + float(np.sum(epoch_s[: best_epoch + 1])), 1) if best_epoch >= 0 else None,
        "total_seconds": round(init_seconds + float(np.sum(epoch_s)), 1),
        "parameters": count_parameters(model),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "env": env_info(),
        "history": history,
    }


def train_quantizer(embs: dict[str, ItemEmbedding], cfg: QuantizeConfig, run: RunDir, progress: bool = True,
                    stop_after_steps: int | None = None, info: dict | None = None) -> tuple[MMRQVAE | None, dict]:
    """Train in the run folder (resuming its checkpoint); (best model on CPU, summary), or
    (None, {"interrupted_at_step": n}) when `stop_after_steps` ended the run early. config.toml and
    `info` (run.json) are written once the checkpoint has loaded, so a resume that fails changes neither."""
    set_cpu_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model = build_model(embs, cfg)
    masks = {m: e.mask for m, e in embs.items()}
    xn = {m: model.vaes[m].normalize(e.table) for m, e in embs.items()}
    gen = torch.Generator().manual_seed(cfg.seed)
    fresh = not run.has_checkpoint()
    t_init = kmeans_init(model, xn, masks, cfg, gen) if fresh and cfg.kmeans_init else 0.0
    task = QuantizeTask(model.to(device), xn, masks, cfg, device, gen, init_seconds=t_init)
    spe = task.steps_per_epoch
    loop = TrainingLoop(task, LoopSettings(total_steps=cfg.epochs * spe, eval_every=spe, metric=METRIC, mode="min",
                                           patience=cfg.patience, steps_per_epoch=spe, name="mm-rq-vae"),
                        run.checkpoints, run.path / BEST, progress=progress)
    loop.resume()
    run.write_config(cfg)
    if info:
        run.write_info(info)
    st = loop.run(stop_after_steps)
    if stop_after_steps is not None and st.step < loop.s.total_steps and not st.stopped_early:
        return None, {"interrupted_at_step": st.step}
    loop.load_best()
    model.cpu().eval()
    return model, summarize(model, st, spe, task.init_seconds)


# ---------------------------------------------------------------------------- inputs and export
def emb_specs(embs: dict[str, ItemEmbedding]) -> dict[str, str]:
    """{m: absolute FILE[:KEY]} as recorded in run.json and read back by `quantize export`."""
    return {m: str(Path(e.path).resolve()) + ("" if e.key == "embedding" else f":{e.key}") for m, e in embs.items()}


def export_inputs(run_dir: str | Path, embs: dict[str, ItemEmbedding]) -> list[Path]:
    """What an export of this run reads: the run's weights, config, record and checkpoints, and the
    input tables. An export may not contain or replace any of them (RUN/export itself is allowed)."""
    run_dir = Path(run_dir)
    return ([run_dir / BEST, run_dir / "config.toml", run_dir / "run.json", run_dir / "checkpoints"]
            + [Path(e.path) for e in embs.values()])


def write_export(model: MMRQVAE, embs: dict[str, ItemEmbedding], out: str | Path, *, run_dir: str | Path,
                 data_fingerprint: str | None, inputs: list[Path], overwrite: bool) -> dict:
    """Encode every item and write the semantic-ID export (artifacts.sid_export); returns its stats."""
    sids, books, tables, stats = export_contents(model, {m: e.table for m, e in embs.items()},
                                                 {m: e.mask for m, e in embs.items()})
    stats.update({"run": str(Path(run_dir).resolve()), "inputs": emb_specs(embs)})
    write_sid_export(out, sids, books, tables, stats, data_fingerprint=data_fingerprint, inputs=inputs,
                     overwrite=overwrite)
    return stats


def check_resume_inputs(run: RunDir, embs: dict[str, ItemEmbedding], fingerprint: str | None) -> None:
    """A run with a checkpoint continues only on tables of the same modalities, items and dataset."""
    if not run.has_checkpoint():
        return
    info, where = run.info(), run.path / "run.json"
    old = info.get("emb")
    if isinstance(old, dict) and old and sorted(old) != sorted(embs):
        raise MmesidError(f"{where}: this run was trained on modalities {', '.join(old)}, not {', '.join(embs)}; "
                          "resume with the same --emb tables or use a new --out")
    n = next(iter(embs.values())).n_items
    if info.get("n_items") is not None and info["n_items"] != n:
        raise MmesidError(f"{where}: this run was trained on {info['n_items']} items, the --emb tables have {n}; "
                          "resume with the same tables or use a new --out")
    run.check_resume_data(fingerprint)


def run_training(embs: dict[str, ItemEmbedding], cfg: QuantizeConfig, run: RunDir | str | Path,
                 export_dir: str | Path | None = None, progress: bool = True, stop_after_steps: int | None = None,
                 data_fingerprint: str | None = None, run_info: dict | None = None,
                 extra_inputs: list[Path] = ()) -> dict:
    """Train (resuming the run's checkpoint), export to `export_dir` (default RUN/export), write metrics.

    `data_fingerprint`: the dataset the tables belong to (default: the one they record); `run_info`:
    more entries for run.json; `extra_inputs`: other inputs the export may not overwrite (--data).
    """
    own = not isinstance(run, RunDir)
    if own:
        run = RunDir(run, KIND).claim(inputs=[Path(e.path) for e in embs.values()] + list(extra_inputs))
    try:
        return _run_training(embs, cfg, run, export_dir, progress, stop_after_steps, data_fingerprint,
                             run_info or {}, list(extra_inputs))
    finally:
        if own:
            run.release()


def _run_training(embs, cfg, run: RunDir, export_dir, progress, stop_after_steps, fingerprint, run_info,
                  extra_inputs) -> dict:
    fingerprint = fingerprint or common_fingerprint(embs)
    export_dir = Path(export_dir) if export_dir is not None else run.path / "export"
    inputs = export_inputs(run.path, embs) + extra_inputs
    check_output_folder(export_dir, EXPORT_KIND, inputs, replaceable=True, what="--export")
    check_resume_inputs(run, embs, fingerprint)
    info = {"emb": emb_specs(embs), "n_items": next(iter(embs.values())).n_items,
            "data_fingerprint": fingerprint, "export": str(export_dir.resolve()), **run_info}
    model, summary = train_quantizer(embs, cfg, run, progress, stop_after_steps, info)
    if model is None:
        return summary
    stats = write_export(model, embs, export_dir, run_dir=run.path, data_fingerprint=fingerprint, inputs=inputs,
                         overwrite=True)
    keys = ("unique_fraction", "collision_rate", "largest_collision_group")
    metrics = {"export": str(export_dir), "sids": {m: {k: s[k] for k in keys} for m, s in stats["modalities"].items()},
               **summary}
    run.write_metrics(metrics)
    return metrics


def recorded_tables(run: RunDir, files: dict[str, str] | None = None) -> dict[str, ItemEmbedding]:
    """The input tables of a trained run (run.json "emb", or `files`), checked against what it recorded."""
    info, where = run.info(), run.path / "run.json"
    old = info.get("emb")
    if files is None:
        if not isinstance(old, dict) or not old:
            raise MmesidError(f"{where}: records no input tables ('emb'); pass them with --emb M=FILE")
        for m, spec in old.items():
            if not split_file_key(str(spec))[0].exists():
                raise MmesidError(f"{where}: the input table {m}={spec} this run was trained on is missing; "
                                  f"restore it or pass --emb {m}=FILE")
        files = {m: str(s) for m, s in old.items()}
    elif isinstance(old, dict) and old and sorted(old) != sorted(files):
        raise MmesidError(f"{where}: this run was trained on modalities {', '.join(old)}, got {', '.join(files)}")
    embs = read_modalities(files)
    first = next(iter(embs.values()))
    if info.get("n_items") is not None and first.n_items != info["n_items"]:
        raise MmesidError(f"{first.path}: {first.n_items} items, but the run {run.path} was trained on "
                          f"{info['n_items']} (the input table changed since training)")
    check_fingerprint(first.path, common_fingerprint(embs), info.get("data_fingerprint"))
    return embs


def load_trained(run: RunDir, files: dict[str, str] | None = None) -> tuple[MMRQVAE, dict[str, ItemEmbedding]]:
    """The best weights of a trained run on its recorded input tables (or `files`), in eval mode."""
    if not (run.path / BEST).exists():
        raise MmesidError(f"{run.path}: no {BEST} (the run has not validated an epoch yet; train first)")
    embs = recorded_tables(run, files)
    cfg = load_config(QuantizeConfig, run.path / "config.toml")
    model = build_model(embs, cfg)
    load_weights(model, run.path / BEST, "the input tables/config")
    return model.eval(), embs


def export_run(run: RunDir, out: str | Path, files: dict[str, str] | None = None, overwrite: bool = False) -> dict:
    """`quantize export`: the best weights of a trained run, applied to its recorded input tables."""
    model, embs = load_trained(run, files)
    fingerprint = run.info().get("data_fingerprint") or common_fingerprint(embs)
    return write_export(model, embs, out, run_dir=run.path, data_fingerprint=fingerprint,
                        inputs=export_inputs(run.path, embs), overwrite=overwrite)
