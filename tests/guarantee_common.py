"""Shared pieces of the guarantee tests (issue 12): tiny real runs made through the CLI, file snapshots
and the one-message check.

Everything is small on purpose (30 items, 40 users, 1-layer 8-wide SASRec, 2-level 4-code quantiser,
2-layer 16-wide Llama) so that the four guarantee modules stay fast on a loaded machine.
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli

# the smallest SASRec that still trains (one epoch is a handful of steps)
SASREC = ["--quiet", "--device", "cpu", "--set", "threads=1", "--set", "epochs=1", "--set", "model.hidden=8",
          "--set", "model.layers=1", "--set", "model.inner=16", "--set", "model.max_len=10", "--set", "batch_size=16"]
QUANT = ["--quiet", "--device", "cpu", "--threads", "1", "--set", "epochs=1", "--set", "batch_size=16",
         "--set", "model.latent_dim=4", "--set", "model.hidden=[8]", "--set", "model.codebook_sizes=[4, 4]"]
FT = ["--quiet", "--device", "cpu", "--threads", "1", "--set", "epochs=1", "--set", "max_steps=2",
      "--set", "batch_size=16", "--set", "warmup_steps=0"]


def snapshot(*roots: Path) -> dict:
    """Every path under the roots with its bytes (folders as None): equal snapshots = nothing touched."""
    out = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            out[str(root)] = root.read_bytes()
            continue
        for p in sorted(root.rglob("*")):
            out[str(p)] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


def cli(capsys, *args) -> tuple[int, str]:
    """(exit status, stderr) of one in-process CLI call; an argparse refusal counts as its exit status."""
    capsys.readouterr()
    try:
        rc = run_cli(*args)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def assert_one_error(err: str, *needles: str, prefix: str = "mmesid: error: ") -> str:
    """Exactly one error line starting with `prefix` (argparse's own is "mmesid <cmd>: error: "),
    holding every needle, and no traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if re.match(r"^mmesid( [a-z-]+)*: error: ", ln)]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert err.count("mmesid: error:") <= 1, err
    assert err.rstrip("\n").splitlines()[-1] == lines[0], err  # the message is one line, the last one
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def sasrec(data, out, *extra) -> int:
    return run_cli("sasrec", "train", "--data", data, "--out", out, *SASREC, *extra)


def quantize(embs: dict, out, *extra) -> int:
    args = ["quantize", "train", "--out", out]
    for m, f in embs.items():
        args += ["--emb", f"{m}={f}"]
    return run_cli(*args, *QUANT, *extra)


def finetune(data, embs: dict, sids, out, llama, *extra) -> int:
    args = ["finetune", "--data", data, "--out", out, "--set", f"backbone.path={llama}", *FT]
    for m, f in embs.items():
        args += ["--emb", f"{m}={f}"]
    if sids is not None:
        args += ["--sids", sids]
    return run_cli(*args, *extra)


def make_dataset(folder: Path, seed: int = 0, n_items: int = 30):
    from mmesid.data.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(n_users=40, n_items=n_items, max_length=12, seed=seed))
    data.save(folder)
    return data


def trained_stack(root: Path, seed: int = 0, llama: bool = True) -> dict:
    """A prepared dataset and, made from it through the CLI, a SASRec run (E_c), a quantiser run with
    its export and (optionally) a tiny Llama: the real artefacts every later command reads."""
    root.mkdir(parents=True, exist_ok=True)
    env = {"root": root, "dir": root / "data", "data": make_dataset(root / "data", seed)}
    env["sasrec"] = root / "sasrec"
    assert sasrec(env["dir"], env["sasrec"]) == 0
    env["ec"] = root / "E_c.safetensors"  # a copy, so that the runs below are not inputs of later commands
    env["ec"].write_bytes((env["sasrec"] / "item_embeddings.safetensors").read_bytes())
    env["quant"] = root / "quant"
    assert quantize({"c": env["ec"]}, env["quant"], "--data", env["dir"]) == 0
    env["sids"] = env["quant"] / "export"
    if llama:
        from rec_fixtures import tiny_llama

        env["llama"] = str(tiny_llama(root / "llama", hidden=16))
    return env

