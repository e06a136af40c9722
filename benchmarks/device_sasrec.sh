#!/usr/bin/env bash
# GPU run of the SASRec comparison (issue 2): mmesid's SASRec and RecBole 1.2.1's, same split, same
# machine, run side by side (BENCHMARKS.md section 2). Run from the repository root; needs .devcarry/
# holding the authors' Beauty_new.txt (+ Beauty_text_img.csv) and wheels/ (RecBole 1.2.1 and the
# dependencies of BENCHMARKS.md's bench-venv). Results go to $OUT (default: a new temporary folder).
set -u
export PYTHONPATH=$PWD/src
W=$(mktemp -d)          # scratch: RecBole packages and both runs
OUT=${OUT:-$(mktemp -d)}
pip install -q --no-deps --no-index --target "$W/rbpkgs" .devcarry/wheels/*.whl >/dev/null 2>&1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch,numpy;print('torch',torch.__version__,'numpy',numpy.__version__)"
(PYTHONPATH=$W/rbpkgs timeout ${RB_TIMEOUT:-480} python3 benchmarks/recbole_sasrec.py \
   --sequences .devcarry/Beauty_new.txt --out "$W/rb" --device cuda > "$OUT/recbole.log" 2>&1;
 cp "$W/rb/recbole_sasrec.json" "$OUT/" 2>/dev/null) &
python3 benchmarks/sasrec_beauty.py --beauty .devcarry --out "$W/sasrec" --device cuda > "$OUT/sasrec.log" 2>&1
cp "$W/sasrec/metrics.json" "$OUT/sasrec_metrics.json"; cp "$W/sasrec/item_embeddings.safetensors" "$OUT/"
tail -25 "$OUT/sasrec.log"
wait
grep -E "epoch [0-9]+ training|valid result|best valid" "$OUT/recbole.log" | tail -6
cat "$OUT/recbole_sasrec.json" 2>/dev/null
echo "results in $OUT"
