#!/usr/bin/env bash
# The converged chain on Beauty, all ours (issue 8): our SASRec's E_c -> MiniLM E_t -> MM-RQ-VAE on
# (E_c, E_t) -> fine-tuning runs trained to convergence (configs/finetune_beauty_converge.toml).
#   bash benchmarks/converge_beauty.sh RUN [RUN ...]     RUN = variant[:seed], or wo-fusion[:seed]
# e.g.  bash benchmarks/converge_beauty.sh mme-sid:42 e4srec:42 mme-sid:43
# Runs one at a time (each uses both cores); a finished run (metrics.json present) is skipped, an
# interrupted one resumes from its checkpoint. Environment: BEAUTY, DATA, SASREC (a finished
# `mmesid sasrec train` run on DATA; trained here if missing), OUT (runs root), CONFIG, THREADS
# (overrides the config's threads: two 1-thread runs side by side train ~1.3x more steps per hour on
# 2 cores than one 2-thread run after another; BENCHMARKS.md section 8).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
BEAUTY=${BEAUTY:-../shared/data/beauty}
DATA=${DATA:-data/beauty}
OUT=${OUT:-benchmarks/out/converge-beauty}
SASREC=${SASREC:-$OUT/sasrec}
CONFIG=${CONFIG:-configs/finetune_beauty_converge.toml}
THREADS=${THREADS:-}
log() { echo "[$(date -u +%FT%TZ)] $*"; }
mkdir -p "$OUT"
[ -d "$DATA" ] || mmesid data prepare "$BEAUTY" --format authors --out "$DATA"
[ -f "$SASREC/metrics.json" ] || { log "sasrec"; mmesid sasrec train --data "$DATA" --out "$SASREC" --quiet; }
EC=$SASREC/item_embeddings.safetensors
ET=$OUT/E_t.safetensors
[ -f "$ET" ] || { log "encode text"; mmesid encode text --data "$DATA" --out "$ET" --threads 2 --quiet; }
Q=$OUT/quantize
[ -f "$Q/metrics.json" ] || { log "quantize"; mmesid quantize train --data "$DATA" --emb c="$EC" --emb t="$ET" \
    --out "$Q" --threads 2 --quiet > "$OUT/quantize.log" 2>&1; }
for spec in "$@"; do
  name=${spec%%:*}; seed=${spec#*:}; [ "$seed" != "$spec" ] || seed=42
  dir=$OUT/$name-s$seed
  [ -f "$dir/metrics.json" ] && { log "skip $name seed $seed (done)"; continue; }
  case $name in
    wo-fusion) sets=(--set variant='"mme-sid"' --set fusion=false) ;;
    *) sets=(--set variant="\"$name\"") ;;
  esac
  [ -z "$THREADS" ] || sets+=(--set threads="$THREADS")
  log "start $name seed $seed"
  /usr/bin/time -v mmesid finetune --data "$DATA" --emb c="$EC" --emb t="$ET" --sids "$Q/export" --out "$dir" \
      --config "$CONFIG" --quiet "${sets[@]}" --set seed="$seed" > "$dir.log" 2>&1 || { log "FAILED $name"; continue; }
  log "done $name seed $seed: $(python -c "import json;m=json.load(open('$dir/metrics.json'));print({k:round(v,4) for k,v in m['test'].items() if '@10' in k}, 'best step', m['best_step'], 'of', m['steps'])")"
done
