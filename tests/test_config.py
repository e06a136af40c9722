from dataclasses import dataclass, field
from typing import Literal

import pytest

from conftest import run_cli
from mmesid.config import dump_toml, load_config
from mmesid.errors import ConfigError


@dataclass
class Inner:
    size: int = 4
    kind: Literal["a", "b"] = "a"


@dataclass
class Outer:
    lr: float = 1e-3
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    ks: list[int] = field(default_factory=lambda: [1, 2])


def test_defaults_file_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("lr = 0.5\n[inner]\nsize = 8\n")
    cfg = load_config(Outer, p, ["inner.kind=\"b\"", "ks=[3]", "name=hello"])
    assert cfg.lr == 0.5 and cfg.inner.size == 8 and cfg.inner.kind == "b" and cfg.ks == [3]
    assert cfg.name == "hello"
    p.write_text(dump_toml(cfg))
    assert load_config(Outer, p) == cfg


@pytest.mark.parametrize("text,needle", [
    ("lrr = 1\n", "unknown config key 'lrr'"),
    ("[inner]\nsizee = 1\n", "unknown config key 'inner.sizee'"),
    ("[inner]\nsize = 'big'\n", "inner.size: expected an integer"),
    ("[inner]\nkind = 'c'\n", "inner.kind: 'c' is not one of"),
])
def test_bad_keys(tmp_path, text, needle):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="c.toml") as e:
        load_config(Outer, p)
    assert needle in str(e.value)


def test_cli_unknown_key_exit_2(tmp_path, capsys, synthetic_dir):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[model]\nhiden = 32\n")
    out = tmp_path / "run"
    assert run_cli("sasrec", "train", "--data", synthetic_dir, "--config", cfg, "--out", out) == 2
    assert "unknown config key 'model.hiden'" in capsys.readouterr().err
    assert not (out / "metrics.json").exists()
