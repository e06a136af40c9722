#!/usr/bin/env bash
# Issue 8, part 3: the GPU path of fine-tuning, as one script bounded by a time limit (the lent device
# machine, or your own GPU). Run from the repository root:
#     LIMIT=540 bash benchmarks/gpu_finetune.sh
# Inputs (CARRY, default .devcarry/, git-ignored; `bash benchmarks/gpu_prepare_carry.sh` fills it here):
#   beauty/                 the prepared Beauty folder (mmesid data prepare)
#   E_c.safetensors         our SASRec's E_c;   E_t.safetensors: MiniLM's E_t
#   smollm2/                a Llama-family HF folder (mmesid backbone import-gguf), or
#   ../.devcarry-gguf/smollm2.gguf.part-*  the GGUF file in pieces (GGUF_PARTS; joined and imported here), or
#   smollm2-shape/          config + tokenizer only: a SmolLM2-shaped random Llama (speed only, no quality)
#   wheels/                 wheels installed (no network) for packages the machine lacks
# Steps, each bounded by the time left:
#   1. the environment: GPU, package versions;
#   2. speed of `mmesid finetune` (benchmarks/finetune_speed.py) with the SmolLM2 backbone in fp32, bf16,
#      and 4-bit NF4 (bitsandbytes, when importable): s/step, users/s, share of the GPU's matmul peak;
#   3. the MM-RQ-VAE on (E_c, E_t) on the GPU (mmesid quantize train);
#   4. MME-SID and E4SRec fine-tuned with configs/finetune_beauty_gpu.toml; resumable: rerunning the
#      script continues them (RUNS persists on the machine between calls).
# Results: OUT (default $OUT or benchmarks/out/gpu): gpu_finetune.json, speed_*.json, logs.
# DEVICE=cpu SMOKE=1 runs every step for a few iterations on a CPU (a check of the script itself).
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}
. benchmarks/gpu_common.sh
# 2. the backbone
BB=${BACKBONE:-$C/smollm2}
REAL=1
GP=${GGUF_PARTS:-.devcarry-gguf}
if [ ! -f "$BB/config.json" ] && ls "$GP"/smollm2.gguf.part-* > /dev/null 2>&1; then
  BB=$RUNS/smollm2
  if [ ! -f "$BB/config.json" ]; then
    log "joining and importing the GGUF file"
    cat "$GP"/smollm2.gguf.part-* > "$RUNS/smollm2.gguf" && mm backbone import-gguf "$RUNS/smollm2.gguf" --out "$BB" > "$OUT/import.log" 2>&1
  fi
fi
if [ ! -f "$BB/config.json" ]; then
  REAL=0
  BB=$RUNS/smollm2-random
  log "no SmolLM2 weights: a SmolLM2-shaped random Llama from $C/smollm2-shape (speed only)"
  $PY - "$C/smollm2-shape" "$BB" <<'EOF' || exit 1
import shutil, sys
from pathlib import Path
import torch
from transformers import AutoConfig, LlamaForCausalLM
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
LlamaForCausalLM(AutoConfig.from_pretrained(src)).save_pretrained(dst)
for f in src.iterdir():
    if f.name != "config.json":
        shutil.copy(f, dst / f.name)
EOF
fi
echo "{\"backbone\": \"$BB\", \"real_weights\": $REAL}" > "$OUT/backbone.json"

# 3. speed: fp32, bf16, NF4
if [ "$SMOKE" = 1 ]; then SP=(--steps 2 --eval-users 64); else SP=(--steps 30 --eval-users 4096); fi
declare -A MODE=([fp32]='--set backbone.dtype="float32" --set mixed_precision="no"'
                 [bf16]='--set backbone.dtype="bfloat16" --set mixed_precision="bf16"'
                 [nf4]='--set backbone.load_in_4bit=true --set mixed_precision="bf16"')
for m in fp32 bf16 nf4; do
  [ "$m" = bf16 ] && [ "$DEVICE" = cpu ] && { log "skip bf16 (CPU: no bf16 backbone)"; continue; }
  [ "$m" = nf4 ] && { [ "$DEVICE" = cpu ] || ! $PY -c "import bitsandbytes" 2> /dev/null; } && { log "skip nf4 (no bitsandbytes or no GPU)"; continue; }
  [ "$(left)" -gt 60 ] || { log "no time left for speed $m"; continue; }
  log "speed $m"
  # shellcheck disable=SC2086
  timeout "$(left)" $PY benchmarks/finetune_speed.py --data "$DATA" --device "$DEVICE" "${SP[@]}" \
      --set "backbone.path=\"$BB\"" ${MODE[$m]} --out "$OUT/speed_$m.json" > "$OUT/speed_$m.log" 2>&1 \
      || log "speed $m failed: $(tail -1 "$OUT/speed_$m.log")"
done

# 4. quantiser and the two fine-tuning runs
quantize_ct
FS=(); [ "$SMOKE" = 1 ] && FS=(--set max_steps=4 --set eval_every=2 --set valid_users=64 --set 'backbone.dtype="float32"' --set 'mixed_precision="no"')
for v in mme-sid e4srec; do
  [ -f "$Q/metrics.json" ] || break
  [ -f "$RUNS/$v/metrics.json" ] && continue
  [ "$(left)" -gt 60 ] || { log "no time left for $v (rerun the script: it resumes)"; continue; }
  log "finetune $v"
  timeout "$(left)" $PY -m mmesid.cli finetune --data "$DATA" --emb c="$EC" \
      --emb t="$ET" --sids "$Q/export" --out "$RUNS/$v" --config configs/finetune_beauty_gpu.toml \
      --set "variant=\"$v\"" --set "backbone.path=\"$BB\"" --device "$DEVICE" --quiet "${FS[@]}" \
      > "$OUT/finetune_$v.log" 2>&1 || log "finetune $v stopped: $(tail -1 "$OUT/finetune_$v.log")"
done

# 5. one summary
$PY benchmarks/gpu_summary.py "$OUT" "$RUNS" gpu_finetune quantize mme-sid e4srec
log "done"
