"""Training loop for SASRec: training split only, early stopping on validation, test at the end.

Training uses every position of each training sequence in one pass (the original SASRec scheme):
for a causal model this gives the prediction of every prefix (s[:t] -> s[t]) at once, which is the
authors' per-prefix training set, without building the prefixes. Sequences longer than max_len + 1
are cut into windows so that no training target is lost.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.dataset import SequenceData
from ..data.split import eval_examples, train_sequences
from ..eval.ranking import evaluate
from ..io import load_tensors, save_tensors, write_json
from ..utils import count_parameters, env_info, peak_rss_mb, resolve_device, seed_everything
from .sasrec import SASRec, SASRecConfig

log = logging.getLogger(__name__)


@dataclass
class SASRecTrainConfig:
    model: SASRecConfig = field(default_factory=SASRecConfig)
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 200
    patience: int = 10  # epochs without validation improvement before stopping
    metric: str = "nDCG@10"
    eval_batch_size: int = 1024
    seed: int = 42
    device: str = "auto"


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) [W, max_len], left-padded; one row per window of a training sequence."""
    ins, outs = [], []
    for s in train_sequences(sequences):
        end = len(s)
        while end > 1:
            start = max(0, end - 1 - max_len)
            inp, tgt = s[start:end - 1], s[start + 1:end]
            a = np.zeros(max_len, dtype=np.int64)
            b = np.zeros(max_len, dtype=np.int64)
            a[max_len - len(inp):] = inp
            b[max_len - len(tgt):] = tgt
            ins.append(a)
            outs.append(b)
            end -= max_len
    return np.stack(ins), np.stack(outs)


def _checkpoint_state(model, opt, epoch, best, best_epoch, bad, history, rng):
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "best": best,
            "best_epoch": best_epoch, "bad": bad, "history": history, "rng": rng,
            "torch_rng": torch.get_rng_state()}


def train_sasrec(data: SequenceData, cfg: SASRecTrainConfig, run_dir: Path, resume: bool = True,
                 progress: bool = True) -> dict:
    """Train, early-stop on validation, evaluate the best model on test, export E_c."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model = SASRec(data.n_items, cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    inputs, targets = training_windows(data.sequences, cfg.model.max_len)
    valid = eval_examples(data.sequences, "valid")
    test = eval_examples(data.sequences, "test")
    gen = torch.Generator().manual_seed(cfg.seed)

    ckpt_path = run_dir / "checkpoint.pt"
    best_path = run_dir / "best_model.safetensors"
    start_epoch, best, best_epoch, bad, history = 0, -1.0, -1, 0, []
    if resume and ckpt_path.exists():
        st = torch.load(ckpt_path, weights_only=True, map_location=device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start_epoch, best, best_epoch, bad, history = (st["epoch"] + 1, st["best"], st["best_epoch"],
                                                       st["bad"], st["history"])
        gen.set_state(st["rng"])
        torch.set_rng_state(st["torch_rng"])  # dropout masks continue exactly where they stopped
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    t_train = 0.0
    for epoch in range(start_epoch, cfg.epochs):
        if bad >= cfg.patience:
            break
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(inputs), generator=gen)
        total, nb = 0.0, 0
        bar = tqdm(range(0, len(perm), cfg.batch_size), desc=f"sasrec epoch {epoch}", disable=not progress,
                   leave=False)
        for lo in bar:
            idx = perm[lo:lo + cfg.batch_size].numpy()
            x = torch.as_tensor(inputs[idx], device=device)
            y = torch.as_tensor(targets[idx], device=device)
            loss = model.loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            nb += 1
        epoch_time = time.perf_counter() - t0
        t_train += epoch_time
        model.eval()
        m = evaluate(model, valid, batch_size=cfg.eval_batch_size, max_len=cfg.model.max_len, device=device,
                     progress=False)
        score = m[cfg.metric]
        history.append({"epoch": epoch, "loss": total / max(1, nb), "epoch_seconds": round(epoch_time, 2),
                        **{k: v for k, v in m.items() if "@" in k}})
        improved = score > best
        if improved:
            best, best_epoch, bad = score, epoch, 0
            save_tensors(best_path, model.state_dict())
        else:
            bad += 1
        log.info("epoch %d loss %.4f valid %s %.4f (best %.4f @ %d) %.1fs", epoch, total / max(1, nb),
                 cfg.metric, score, best, best_epoch, epoch_time)
        if progress:
            tqdm.write(f"epoch {epoch}: loss {total / max(1, nb):.4f} valid {cfg.metric} {score:.4f} "
                       f"(best {best:.4f} @ {best_epoch}) {epoch_time:.1f}s")
        st = _checkpoint_state(model, opt, epoch, best, best_epoch, bad, history, gen.get_state())
        tmp = ckpt_path.with_suffix(".pt.tmp")
        torch.save(st, tmp)
        tmp.replace(ckpt_path)

    state, _ = load_tensors(best_path)
    model.load_state_dict(state)
    model.eval()
    valid_m = evaluate(model, valid, batch_size=cfg.eval_batch_size, max_len=cfg.model.max_len, device=device,
                       progress=progress)
    test_m = evaluate(model, test, batch_size=cfg.eval_batch_size, max_len=cfg.model.max_len, device=device,
                      progress=progress)
    emb = model.item_emb.weight.detach().cpu().clone()
    save_tensors(run_dir / "item_embeddings.safetensors", {"embedding": emb},
                 metadata={"modality": "collaborative", "encoder": "sasrec", "dim": emb.shape[1],
                           "n_items": data.n_items, "padding_row": 0})
    epoch_times = [h["epoch_seconds"] for h in history]
    metrics = {
        "model": "SASRec",
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "valid": valid_m,
        "test": test_m,
        "seconds_per_epoch": round(float(np.mean(epoch_times)), 2) if epoch_times else None,
        "train_seconds": round(t_train, 1),
        "parameters": count_parameters(model),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "env": env_info(),
        "history": history,
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def load_sasrec(run_dir: Path, n_items: int, cfg: SASRecConfig, device="cpu") -> SASRec:
    model = SASRec(n_items, cfg)
    state, _ = load_tensors(Path(run_dir) / "best_model.safetensors")
    model.load_state_dict(state)
    return model.to(device).eval()


def config_dict(cfg: SASRecTrainConfig) -> dict:
    return dataclasses.asdict(cfg)
