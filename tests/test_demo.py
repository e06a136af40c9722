import json

import numpy as np
import pytest
from conftest import run_cli
from scipy.stats import kendalltau

from mmesid.data.dataset import SequenceData
from mmesid.io import load_tensors


def _direct_tau(a, b, keep, sequences):
    """Kendall tau-b of ||a[h] - a[t]|| vs ||b[h] - b[t]|| over the training-prefix pairs, written out."""
    da, db = [], []
    for s in sequences:
        s = [int(x) for x in s[:-2]]
        for t in range(1, len(s)):
            for h in s[max(0, t - 50):t]:
                if h != s[t] and keep[h] and keep[s[t]]:
                    da.append(float(np.linalg.norm(a[h] - a[s[t]])))
                    db.append(float(np.linalg.norm(b[h] - b[s[t]])))
    return kendalltau(da, db).statistic


def test_demo_quick_runs_every_stage(tmp_path):
    """The README's main job, with tiny budgets: every stage runs and the summary reports its artefacts."""
    from PIL import Image

    out = tmp_path / "demo"
    assert run_cli("demo", "--out", out, "--users", 120, "--items", 48, "--quick") == 0
    summary = json.loads((out / "summary.json").read_text())
    runs = {"SASRec": out / "sasrec", "mme-sid": out / "finetune-mme-sid", "e4srec": out / "finetune-e4srec"}
    assert set(summary["test"]) == set(runs)
    for name, run in runs.items():  # the summary is each run's own test result, rounded
        m = json.loads((run / "metrics.json").read_text())
        test = m.get("test", m)
        assert summary["test"][name] == {k: round(v, 4) for k, v in test.items() if "@" in k}, name
    data = SequenceData.load(out / "data")
    # E_v: the colour histogram of each item's image (4 bins per channel), counted here pixel by pixel
    e_v = load_tensors(out / "E_v.safetensors")[0]["embedding"].numpy()
    for item in (1, data.n_items):
        px = np.asarray(Image.open(out / "images" / data.items[item - 1].image).convert("RGB")).reshape(-1, 3) // 64
        want = np.bincount(px[:, 0] * 16 + px[:, 1] * 4 + px[:, 2], minlength=64) / len(px)
        np.testing.assert_allclose(e_v[item], want, atol=1e-7)
    # forgetting: tau between E_c and the export's z_hat.c, recomputed from the two files
    (spec, res), = summary["forgetting"]["results"].items()
    e_c = load_tensors(out / "sasrec" / "item_embeddings.safetensors")[0]
    export = load_tensors(out / "quantize" / "export" / "embeddings.safetensors")[0]
    keep = e_c["mask"].numpy().astype(bool) & export["mask.c"].numpy().astype(bool)
    keep[0] = False
    direct = _direct_tau(e_c["embedding"].double().numpy(), export["z_hat.c"].double().numpy(), keep, data.sequences)
    assert spec.endswith("embeddings.safetensors:z_hat.c") and res["tau"] == pytest.approx(direct, abs=1e-9)
    with Image.open(out / "collapse.png") as im:
        assert im.format == "PNG"
    spectra = json.loads((out / "collapse.json").read_text())["spectra"]
    assert set(spectra) == {"mme-sid-input", "e4srec-input", "E_x"}
