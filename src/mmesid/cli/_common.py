"""Helpers shared by the command modules: the one CLI convention, config loading, output.

Convention (docs/DEVELOPING.md, "Command line"): every command that shows progress takes `--quiet`;
every command that writes a folder or file takes `--out` and `--overwrite` (replace an output of the
same kind only); `--device`, `--threads` and `--batch-size` are flags wherever they apply (for the
training commands `--device`/`--threads` are the config keys `device`/`threads`, so the run records
them); training commands take `--config FILE.toml`, `--set key=value` and `--allow-config-change`.
Nothing here imports torch, so `mmesid --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..config import arg_number, load_config


def add_config_args(p: argparse.ArgumentParser, resumable: bool = True) -> None:
    p.add_argument("--config", type=Path, help="TOML file overriding the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (dotted, value in TOML syntax); repeatable")
    if resumable:
        p.add_argument("--allow-config-change", action="store_true",
                       help="resume a run with changed config keys (they are used and recorded)")


def add_runtime_args(p: argparse.ArgumentParser, device: bool = True, threads: bool = True,
                     batch_size: int | None = None, progress: bool = True) -> None:
    if device:
        p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    if threads:
        p.add_argument("--threads", type=arg_number(int, ge=0), default=None,
                       help="CPU threads (torch.set_num_threads); 0 = torch's default")
    if batch_size is not None:
        p.add_argument("--batch-size", type=arg_number(int, ge=1), default=batch_size,
                       help=f"items/users per batch (default {batch_size})")
    if progress:
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_int8_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8", action="store_true",
                   help="fine-tuned LLM runs on CPU: quantise the backbone's linear layers to int8 for inference "
                        "(1.4-1.7x faster on Beauty; nDCG@10 -1%% with MiniLM, -3%% with SmolLM2: check per model; "
                        "BENCHMARKS.md section 14)")


def add_output_args(p: argparse.ArgumentParser, required: bool = True, help: str = "output folder") -> None:
    p.add_argument("--out", type=Path, required=required, help=help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output of the same kind (never anything else)")


def runtime_overrides(args) -> list[str]:
    """--device/--threads of a training command as config overrides (recorded in config.toml)."""
    out = list(getattr(args, "overrides", []) or [])
    if getattr(args, "device", None):
        out.append(f'device="{args.device}"')
    if getattr(args, "threads", None) is not None:
        out.append(f"threads={args.threads}")
    return out


def config_from_args(cls, args, section: str | None = None):
    return load_config(cls, args.config, runtime_overrides(args), section=section)


def default_out(name: str) -> Path:
    """runs/<name>-YYYYmmdd-HHMMSS when --out is not given."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def add_run_args(p: argparse.ArgumentParser, name: str, what: str) -> None:
    """--out / --overwrite of a training command whose run folder resumes."""
    p.add_argument("--out", type=Path, help=f"run folder (default: runs/{name}-<time>); an existing one resumes")
    p.add_argument("--overwrite", action="store_true", help=f"start the {what} run in --out again from scratch")


def resolve_run(args, kind: str, config_cls, name: str):
    """(out folder, RunDir, config) of a training command: the defaults, --config, --set, --device,
    --threads, checked against the config of a run being resumed (--allow-config-change, --overwrite)."""
    from ..artifacts.runs import RunDir

    out = args.out or default_out(name)
    run = RunDir(out, kind)
    cfg = run.resolve_config(config_cls, args.config, runtime_overrides(args), args.allow_config_change,
                             fresh=args.overwrite)
    return out, run, cfg


def print_metrics(title: str, metrics: dict) -> None:
    keys = [k for k in metrics if "@" in k]
    print(f"{title}: " + "  ".join(f"{k} {metrics[k]:.4f}" for k in keys))


def print_valid_test(metrics: dict) -> None:
    if "valid" in metrics:
        print_metrics("valid", metrics["valid"])
    if "test" in metrics:
        print_metrics("test ", metrics["test"])


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))

