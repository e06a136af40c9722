"""`mmesid --help` and `mmesid --version` must not import torch (or anything that does): they are what a
user types first, and torch alone takes seconds to import. Checked with `python -X importtime`, which
lists every module imported; the wall time is printed (run with -s to see it), not asserted."""

import subprocess
import sys
import time

import pytest

import mmesid


def _run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - start


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_do_not_import_torch(flag):
    proc, _ = _run("-X", "importtime", "-m", "mmesid.cli", flag)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "mmesid.cli" in imported  # the listing is really there
    heavy = [m for m in imported if m.split(".")[0] in ("torch", "transformers", "safetensors", "scipy")]
    assert not [line for line in proc.stderr.splitlines() if "torch" in line], heavy[:10]
    assert not heavy, heavy[:10]
    if flag == "--version":
        assert proc.stdout == f"mmesid {mmesid.__version__}\n"
        commands = [m for m in imported if m.startswith("mmesid.cli.") and m != "mmesid.cli.__main__"]
        assert commands == [], "--version is answered before any command module is imported"
    else:
        assert proc.stdout.startswith("usage: mmesid")
        for command in ("analyze", "data", "demo", "encode", "evaluate", "finetune", "quantize", "sasrec"):
            assert command in proc.stdout, command
    _, seconds = _run("-m", "mmesid.cli", flag)
    print(f"\nmmesid {flag}: {seconds:.2f} s wall (no -X importtime)")
