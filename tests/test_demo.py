import json

from conftest import run_cli


def test_demo_quick_runs_every_stage(tmp_path):
    """The README's main job, with tiny budgets: every stage runs and leaves its artefacts."""
    out = tmp_path / "demo"
    assert run_cli("demo", "--out", out, "--users", 120, "--items", 48, "--quick") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test"]) == {"SASRec", "mme-sid", "e4srec"}
    for metrics in summary["test"].values():
        assert 0.0 <= metrics["nDCG@10"] <= metrics["HR@10"] <= 1.0
    assert (out / "quantize" / "export" / "semantic_ids.safetensors").exists()
    assert (out / "collapse.png").stat().st_size > 1000
    assert -1.0 <= summary["forgetting"]["results"][next(iter(summary["forgetting"]["results"]))]["tau"] <= 1.0
