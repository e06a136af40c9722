#!/usr/bin/env bash
# Issue 11: the Beauty rows of the semantic-ID baselines (TIGER-MM, LETTER, MOTOR), trained to convergence
# on a GPU in one time-bounded script. On this project's 2-core CPU a TIGER-sized T5 needs ~5 s per batch
# of 256 prefixes and beam search scores ~4 users/s (BENCHMARKS.md section 8), so these rows need a GPU.
#     LIMIT=540 bash benchmarks/gpu_baselines.sh
# Inputs as for benchmarks/gpu_finetune.sh (.devcarry/: beauty/, E_c.safetensors, E_t.safetensors;
# benchmarks/gpu_prepare_carry.sh fills it). Steps, each bounded by the time left and resumable (rerun the
# script: RUNS persists on the machine between calls):
#   1. the MM-RQ-VAE on (E_c, E_t) (shared with gpu_finetune.sh);
#   2. MOTOR: our SASRec with ID-free items from the text semantic-ID tokens (Beauty has no images);
#   3. TIGER-MM: T5 (TIGER's size) generating the c + t tuple, constrained beam search over 20 beams;
#   4. LETTER: the RQ-VAE on E_t with LETTER's collaborative (E_c) and diversity regularisers, then TIGER
#      on its text semantic IDs.
# Results: OUT (default benchmarks/out/gpu-baselines): gpu_baselines.json and logs.
# DEVICE=cpu SMOKE=1 runs every step on synthetic data for a few epochs (a check of the script itself).
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu-baselines}
if [ "${SMOKE:-0}" = 1 ]; then  # synthetic data and random tables, before the shared setup reads them
  S=${RUNS:-benchmarks/out/gpu-runs}/smoke-data
  if [ ! -f "$S/E_t.safetensors" ]; then
    mkdir -p "$(dirname "$S")"
    ${PYTHON:-python3} -m mmesid.cli data synthetic --out "$S/data" --users 200 --items 80 > /dev/null
    PYTHONPATH=$PWD/src ${PYTHON:-python3} - "$S" <<'EOF'
import sys
import torch
from mmesid.artifacts.embeddings import write_item_embedding
from mmesid.data.dataset import SequenceData
s = sys.argv[1]
d = SequenceData.load(f"{s}/data")
g = torch.Generator().manual_seed(0)
for m, dim in (("c", 64), ("t", 384)):
    write_item_embedding(f"{s}/E_{m}.safetensors", torch.randn(d.n_items + 1, dim, generator=g), modality=m,
                         encoder="random", data_fingerprint=d.fingerprint)
EOF
  fi
  DATA=$S/data EC=$S/E_c.safetensors ET=$S/E_t.safetensors
fi
. benchmarks/gpu_common.sh

if [ "$SMOKE" = 1 ]; then EP=(--set epochs=2); QEP=(--set epochs=2); else EP=(); QEP=(); fi
train() {  # name, log file, command...: run once to its metrics.json, bounded by the time left
  local name=$1; shift
  [ -f "$RUNS/$name/metrics.json" ] && return 0
  [ "$(left)" -gt 60 ] || { log "no time left for $name (rerun the script: it resumes)"; return 1; }
  log "$name"
  timeout "$(left)" "$@" > "$OUT/$name.log" 2>&1 || { log "$name stopped: $(tail -1 "$OUT/$name.log")"; return 1; }
}

quantize_ct
if [ -f "$Q/metrics.json" ]; then
  train motor $PY -m mmesid.cli sasrec train --data "$DATA" --out "$RUNS/motor" --device "$DEVICE" --quiet \
      --set 'item_repr="motor"' --set "sids=\"$Q/export\"" "${EP[@]}"
  train tiger-mm $PY -m mmesid.cli tiger train --data "$DATA" --sids "$Q/export" --out "$RUNS/tiger-mm" \
      --device "$DEVICE" --quiet "${EP[@]}"
fi
train letter-tokenizer $PY -m mmesid.cli quantize train --data "$DATA" --emb t="$ET" --out "$RUNS/letter-tokenizer" \
    --device "$DEVICE" --quiet --set loss.cf_weight=1.0 --set loss.diversity_weight=1e-4 \
    --set "cf_emb=\"$EC\"" "${QEP[@]}"
[ -f "$RUNS/letter-tokenizer/metrics.json" ] && train letter $PY -m mmesid.cli tiger train --data "$DATA" \
    --sids "$RUNS/letter-tokenizer/export" --out "$RUNS/letter" --device "$DEVICE" --quiet \
    --set 'modalities=["t"]' "${EP[@]}"

$PY benchmarks/gpu_summary.py "$OUT" "$RUNS" gpu_baselines motor tiger-mm letter-tokenizer letter
log "done"
