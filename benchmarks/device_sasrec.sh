#!/usr/bin/env bash
# GPU run of the SASRec comparison (issue 2): mmesid's SASRec and RecBole 1.2.1's, same split, same
# machine, run side by side. Needs .devcarry/ (Beauty files + RecBole wheels; see BENCHMARKS.md).
set -u
export PYTHONPATH=$PWD/src
pip install -q --no-deps --no-index --target /tmp/rbpkgs .devcarry/wheels/*.whl >/dev/null 2>&1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch,numpy;print('torch',torch.__version__,'numpy',numpy.__version__)"
OUT=${OUT:-/tmp/out}
(PYTHONPATH=/tmp/rbpkgs timeout ${RB_TIMEOUT:-480} python3 benchmarks/recbole_sasrec.py \
   --sequences .devcarry/Beauty_new.txt --out /tmp/rb --device cuda > $OUT/recbole.log 2>&1;
 cp /tmp/rb/recbole_sasrec.json $OUT/ 2>/dev/null) &
python3 benchmarks/sasrec_beauty.py --beauty .devcarry --out /tmp/sasrec --device cuda > $OUT/sasrec.log 2>&1
cp /tmp/sasrec/metrics.json $OUT/sasrec_metrics.json; cp /tmp/sasrec/item_embeddings.safetensors $OUT/
tail -25 $OUT/sasrec.log
wait
grep -E "epoch [0-9]+ training|valid result|best valid" $OUT/recbole.log | tail -6
cat $OUT/recbole_sasrec.json 2>/dev/null
