#!/usr/bin/env bash
# The converged chain on one dataset, all ours (issue 8): our SASRec's E_c -> MiniLM E_t -> MM-RQ-VAE on
# (E_c, E_t) -> fine-tuning runs trained to convergence (validation-selected, tested on every user).
#   bash benchmarks/converge.sh RUN [RUN ...]        RUN = NAME[:seed]
# NAME: any fine-tuning variant (mme-sid, e4srec, mme-sid-random, ...), or
#   se-sid         SE-SID: E_c and its own semantic IDs, from a quantiser trained on E_c alone (quantize-c/)
#   wo-fusion      MME-SID scored with E_x only (the paper's "w/o Fusion")
#   e4srec-fusion  E4SRec's inputs with MME-SID's frequency-aware fusion (which part of the gap is the scoring)
#   mme-sid-xc     MME-SID with E_x initialised at W_c E_c + b_c (target_init = "collaborative")
# Beauty (default):  bash benchmarks/converge.sh mme-sid:42 e4srec:42
# Sports:            SOURCE=../shared/data/sports FORMAT=interactions DATA=data/sports OUT=benchmarks/out/converge-sports \
#                    CONFIG=configs/finetune_sports_converge.toml QSETS="model.codebook_sizes=[300,300,300,300]" \
#                    bash benchmarks/converge.sh mme-sid:42 e4srec:42
# A finished run (metrics.json present) is skipped, an interrupted one resumes from its checkpoint; SASRec,
# the text encoding and the quantiser run first when missing. Environment: SOURCE + FORMAT (authors |
# interactions: SOURCE/interactions.csv + SOURCE/items.csv), DATA (prepared dataset), SASREC (a finished
# `mmesid sasrec train` run on DATA), OUT (runs root), CONFIG, THREADS (CPU threads of every stage; overrides the config's threads:
# two 1-thread runs side by side train ~1.3x more steps per hour on 2 cores than one 2-thread run after
# another; BENCHMARKS.md section 8), SETS + TAG (extra overrides for every run, into folders NAME$TAG-sSEED:
# SETS="epochs=10" TAG=-e10 bash benchmarks/converge.sh mme-sid:42 trains on a schedule twice as long).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
SOURCE=${SOURCE:-../shared/data/beauty}
FORMAT=${FORMAT:-authors}
DATA=${DATA:-data/beauty}
OUT=${OUT:-benchmarks/out/converge-beauty}
SASREC=${SASREC:-$OUT/sasrec}
CONFIG=${CONFIG:-configs/finetune_beauty_converge.toml}
THREADS=${THREADS:-}
SETS=${SETS:-}  # extra config overrides for every run, e.g. SETS="epochs=10"; give them a TAG (run folder NAME$TAG-sSEED)
QSETS=${QSETS:-}  # quantiser config overrides, e.g. QSETS="model.codebook_sizes=[300,300,300,300]" (the paper's Sports codebooks)
TAG=${TAG:-}
[ -z "$SETS" ] || [ -n "$TAG" ] || { echo "SETS needs a TAG: runs with other settings go to other folders" >&2; exit 2; }
log() { echo "[$(date -u +%FT%TZ)] $*"; }
mkdir -p "$OUT"
if [ ! -d "$DATA" ]; then
  case $FORMAT in
    authors) mmesid data prepare "$SOURCE" --format authors --out "$DATA" ;;
    interactions) mmesid data prepare "$SOURCE/interactions.csv" --format interactions --items "$SOURCE/items.csv" --out "$DATA" ;;
    *) echo "FORMAT must be authors or interactions, got $FORMAT" >&2; exit 2 ;;
  esac
fi
[ -f "$SASREC/metrics.json" ] || { log "sasrec"; mmesid sasrec train --data "$DATA" --out "$SASREC" --threads "${THREADS:-0}" --quiet >> "$SASREC.log" 2>&1; }
EC=$SASREC/item_embeddings.safetensors
ET=$OUT/E_t.safetensors
[ -f "$ET" ] || { log "encode text"; mmesid encode text --data "$DATA" --out "$ET" --threads "${THREADS:-2}" --quiet; }
Q=$OUT/quantize
qsets=()
for kv in $QSETS; do qsets+=(--set "$kv"); done
[ -f "$Q/metrics.json" ] || { log "quantize"; mmesid quantize train --data "$DATA" --emb c="$EC" --emb t="$ET" \
    --out "$Q" --threads "${THREADS:-2}" --quiet "${qsets[@]}" >> "$OUT/quantize.log" 2>&1; }
for spec in "$@"; do
  name=${spec%%:*}; seed=${spec#*:}; [ "$seed" != "$spec" ] || seed=42
  dir=$OUT/$name$TAG-s$seed
  [ -f "$dir/metrics.json" ] && { log "skip $name seed $seed (done)"; continue; }
  sids=$Q/export
  if [ "$name" = se-sid ]; then  # single-embedding SIDs: a quantiser of E_c alone (same settings), not the c part of MM-RQ-VAE
    sids=$OUT/quantize-c/export
    [ -f "$OUT/quantize-c/metrics.json" ] || { log "quantize c only"; mmesid quantize train --data "$DATA" --emb c="$EC" \
        --out "$OUT/quantize-c" --threads "${THREADS:-2}" --quiet "${qsets[@]}" >> "$OUT/quantize-c.log" 2>&1; }
  fi
  case $name in
    wo-fusion) sets=(--set variant='"mme-sid"' --set fusion=false) ;;
    e4srec-fusion) sets=(--set variant='"e4srec"' --set fusion=true) ;;
    mme-sid-xc) sets=(--set variant='"mme-sid"' --set target_init='"collaborative"') ;;
    *) sets=(--set variant="\"$name\"") ;;
  esac
  [ -z "$THREADS" ] || sets+=(--set threads="$THREADS")
  for kv in $SETS; do sets+=(--set "$kv"); done
  log "start $name seed $seed"
  /usr/bin/time -v mmesid finetune --data "$DATA" --emb c="$EC" --emb t="$ET" --sids "$sids" --out "$dir" \
      --config "$CONFIG" --quiet "${sets[@]}" --set seed="$seed" >> "$dir.log" 2>&1 || { log "FAILED $name"; continue; }
  log "done $name seed $seed: $(python -c "import json;m=json.load(open('$dir/metrics.json'));print({k:round(v,4) for k,v in m['test'].items() if '@10' in k}, 'best step', m['best_step'], 'of', m['steps'])")"
done
