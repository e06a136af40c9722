"""The shared training loop: validation schedule, early stop, best weights, and its log lines."""

from __future__ import annotations

import logging

import torch

from mmesid.artifacts.checkpoint import CheckpointStore
from mmesid.training.loop import LoopSettings, TrainingLoop


class Countdown:
    """A task whose validation metric rises until step `peak`, then falls."""

    def __init__(self, peak: int):
        self.w = torch.zeros(1)
        self.peak = peak

    def train_step(self, step: int) -> float:
        self.w += 1
        return 1.0 / (step + 1)

    def validate(self, step: int) -> dict[str, float]:
        return {"nDCG@10": float(-abs(step - self.peak))}

    def state_dict(self) -> dict:
        return {"w": self.w.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.w = state["w"].clone()

    def best_weights(self) -> dict[str, torch.Tensor]:
        return {"w": self.w.clone()}

    def load_best_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.w = weights["w"].clone()


def test_loop_keeps_the_best_validation_stops_early_and_logs_a_heartbeat(tmp_path, caplog):
    task = Countdown(peak=4)
    s = LoopSettings(total_steps=40, eval_every=2, metric="nDCG@10", patience=2, save_every=3, name="toy")
    loop = TrainingLoop(task, s, CheckpointStore(tmp_path / "ck"), tmp_path / "best.safetensors", progress=False)
    with caplog.at_level(logging.INFO, logger="mmesid.training.loop"):
        st = loop.run()
    assert st.best_step == 4 and st.stopped_early and st.step == 8  # validations at 6 and 8 are worse
    loop.load_best()
    assert float(task.w) == 4.0
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("toy step 3 of 40: loss ") and "s/step so far" in m for m in lines)
    assert any(m.startswith("toy step 4: loss ") and "(best 0.0000 @ 4)" in m for m in lines)
    assert not any(m.startswith("toy step 6 of 40") for m in lines)  # validated steps log their validation only
