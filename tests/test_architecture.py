"""The layering rule of docs/DEVELOPING.md ("Architecture"), checked by reading every import in src/."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mmesid"
CORE = {"errors", "config", "io", "utils", "artifacts"}
ALLOWED = {
    "errors": set(),
    "config": {"errors"},
    "io": {"errors"},
    "utils": {"errors"},
    "artifacts": {"errors", "config", "io", "utils"},
    "data": CORE,
    "eval": CORE | {"data"},
    "training": CORE,
    "encoders": CORE | {"data"},
    "quantize": CORE | {"data", "training"},
    "models": CORE | {"data", "eval", "training"},
    "rec": CORE | {"data", "eval", "training"},
    "analysis": CORE | {"data"},
    "serve": CORE | {"data", "eval", "models", "rec", "encoders", "quantize"},
    "cli": None,  # the command line may use everything
}


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def _imported_packages(path: Path) -> set[str]:
    """Top-level mmesid packages imported by one file (absolute and relative imports)."""
    tree = ast.parse(path.read_text())
    depth_pkg = path.relative_to(SRC).parent.parts  # the file's package inside mmesid
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("mmesid."):
                    out.add(a.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("mmesid."):
                    out.add(node.module.split(".")[1])
                elif node.module == "mmesid":
                    out.update(a.name for a in node.names)
            else:
                base = list(depth_pkg[: len(depth_pkg) - (node.level - 1)]) if node.level > 1 else list(depth_pkg)
                parts = base + (node.module.split(".") if node.module else [])
                if parts:
                    out.add(parts[0])
                else:
                    out.update(a.name for a in node.names)
    return out


def _files():
    return sorted(p for p in SRC.rglob("*.py"))


def test_every_package_is_classified():
    tops = {_package_of(p) for p in _files()} - {"__init__"}
    assert tops <= set(ALLOWED), f"unclassified packages: {sorted(tops - set(ALLOWED))}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layering(path):
    pkg = _package_of(path)
    allowed = ALLOWED.get(pkg)
    if allowed is None:
        return
    bad = {p for p in _imported_packages(path) if p != pkg and p in ALLOWED and p not in allowed}
    assert not bad, f"{path.relative_to(SRC)} ({pkg}) imports {sorted(bad)}; allowed: {sorted(allowed)}"


def test_the_checker_sees_relative_and_absolute_imports(tmp_path, monkeypatch):
    # a file inside mmesid/rec importing quantize both ways must be reported
    fake = SRC / "rec" / "_layering_probe.py"
    src = "from ..quantize import x\nimport mmesid.analysis.forgetting\nfrom .model import y\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: src if self == fake else _orig(self))
    assert _imported_packages(fake) == {"quantize", "analysis", "rec"}


_orig = Path.read_text


def test_no_function_longer_than_80_lines():
    long = []
    for path in _files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 80 lines: " + ", ".join(long)
