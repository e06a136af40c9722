"""Helpers shared by the command modules: config loading, run folders, output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import dump_toml, load_config
from ..io import atomic_path, new_run_dir


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file overriding the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (dotted, value in TOML syntax); repeatable")


def config_from_args(cls, args, section: str | None = None):
    return load_config(cls, args.config, args.overrides, section=section)


def run_dir_from_args(args, name: str) -> Path:
    if getattr(args, "out", None):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    return new_run_dir(getattr(args, "runs_root", "runs"), name)


def write_run_config(run_dir: Path, cfg, extra: dict | None = None) -> None:
    """Save the resolved config (re-usable with --config) and the command's inputs."""
    with atomic_path(run_dir / "config.toml") as tmp:
        tmp.write_text(dump_toml(cfg))
    if extra:
        with atomic_path(run_dir / "run.json") as tmp:
            tmp.write_text(json.dumps(extra, indent=2, default=str) + "\n")


def print_metrics(title: str, metrics: dict) -> None:
    keys = [k for k in metrics if "@" in k]
    print(f"{title}: " + "  ".join(f"{k} {metrics[k]:.4f}" for k in keys))
