"""Items added to a trained fine-tuning run after training (`mmesid items add`): the on-disk format.

The folder `RUN/added_items/` holds, for every added item, its catalogue entry (`items.csv`: number,
raw_id, title, image) and its model rows (`rows.safetensors`: `number`, the original embeddings
`E.<m>` with `mask.<m>`, the semantic IDs `sid.<m>`, the target-table row `E_x` and the fusion's
frequency input `q`; folders written before `q` existed are applied with q = 0). Numbers above
the dataset's item count extend the catalogue; numbers inside it replace the rows of items the model
never saw in training (a cold-item split). Written as a whole folder swapped in by one rename; the
run's trained weights are never changed.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import torch

from ..errors import MmesidError
from ..io import load_tensors, save_tensors, write_json
from .outputs import swap_dir

FOLDER = "added_items"


@dataclasses.dataclass
class AddedItems:
    numbers: torch.Tensor  # [N] item numbers
    raw_ids: list[str]
    titles: list[str]
    images: list[str]
    rows: dict[str, torch.Tensor]  # "E.<m>", "mask.<m>", "sid.<m>", "E_x", "q": N rows each
    meta: dict[str, str]

    def new_items(self, n_items: int) -> list[tuple[int, str, str, str]]:
        """(number, raw_id, title, image) of the items beyond the dataset's catalogue, by number."""
        out = [(int(n), r, t, i) for n, r, t, i in zip(self.numbers, self.raw_ids, self.titles, self.images)
               if int(n) > n_items]
        return sorted(out)


def write_added_items(run_dir: str | Path, added: AddedItems) -> Path:
    n = len(added.numbers)
    bad = [k for k, v in added.rows.items() if v.shape[0] != n]
    if bad or not (len(added.raw_ids) == len(added.titles) == len(added.images) == n):
        raise MmesidError(f"added items: rows {bad} do not have {n} entries")
    out = Path(run_dir) / FOLDER
    with swap_dir(out) as tmp:
        with open(tmp / "items.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["number", "raw_id", "title", "image"])
            w.writerows(zip(added.numbers.tolist(), added.raw_ids, added.titles, added.images))
        save_tensors(tmp / "rows.safetensors", {"number": added.numbers.long(), **added.rows}, added.meta)
        write_json(tmp / "info.json", {**added.meta, "items": n})
    return out


def read_added_items(run_dir: str | Path) -> AddedItems | None:
    """The run's added items, or None when it has none."""
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return None
    tensors, meta = load_tensors(folder / "rows.safetensors")
    try:
        with open(folder / "items.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))[1:]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise MmesidError(f"{folder / 'items.csv'}: unreadable ({e})") from None
    numbers = tensors.pop("number")
    if len(rows) != len(numbers) or any(len(r) != 4 or r[0] != str(int(n)) for r, n in zip(rows, numbers)):
        raise MmesidError(f"{folder}: items.csv does not match rows.safetensors (damaged; run `mmesid items add` again)")
    return AddedItems(numbers, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], tensors, meta)
