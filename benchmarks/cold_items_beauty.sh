#!/usr/bin/env bash
# The cold-item experiment on Beauty (issue 9): 5% of the items never appear in training; the whole chain
# (SASRec E_c, MiniLM E_t, quantiser, MME-SID) is trained without them, then `mmesid items add` makes
# them recommendable. Evaluated on the test users whose target is a cold item, and on all users:
# MME-SID with the added items (E_c/E_x init chosen on validation), the same run before adding them,
# popularity, random, and the upper bound: MME-SID trained on the full data ($FULL_RUN), on the same users.
#   bash benchmarks/cold_items_beauty.sh          (resumes: finished steps are skipped)
# Environment: DATA (prepared Beauty), OUT (runs root), FULL_RUN (a converged MME-SID run on DATA),
# CONFIG (fine-tuning config), THREADS (CPU threads per stage; 0 = torch default), SETS (extra fine-tuning
# overrides, e.g. SETS="epochs=2"; give $FULL_RUN the same ones so that the upper bound is trained alike).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
DATA=${DATA:-data/beauty}
OUT=${OUT:-benchmarks/out/cold-beauty}
FULL_RUN=${FULL_RUN:-benchmarks/out/converge-beauty/mme-sid-s42}
CONFIG=${CONFIG:-configs/finetune_beauty_converge.toml}
THREADS=${THREADS:-0}
SETS=${SETS:-}
sets=(); for kv in $SETS; do sets+=(--set "$kv"); done
COLD=$OUT/data
log() { echo "[$(date -u +%FT%TZ)] $*"; }
mkdir -p "$OUT"
[ -d "$COLD" ] || mmesid data cold-split --data "$DATA" --fraction 0.05 --seed 0 --out "$COLD"
[ -f "$OUT/sasrec/metrics.json" ] || { log sasrec; mmesid sasrec train --data "$COLD" --out "$OUT/sasrec" --threads "$THREADS" --quiet >> "$OUT/sasrec.log" 2>&1; }
EC=$OUT/sasrec/item_embeddings.safetensors; ET=$OUT/E_t.safetensors
[ -f "$ET" ] || { log encode; mmesid encode text --data "$COLD" --out "$ET" --threads "$THREADS" --quiet; }
[ -f "$OUT/quantize/metrics.json" ] || { log quantize; mmesid quantize train --data "$COLD" --emb c="$EC" --emb t="$ET" \
    --out "$OUT/quantize" --threads "$THREADS" --quiet >> "$OUT/quantize.log" 2>&1; }
FT=$OUT/mme-sid
[ -f "$FT/metrics.json" ] || { log finetune; mmesid finetune --data "$COLD" --emb c="$EC" --emb t="$ET" \
    --sids "$OUT/quantize/export" --out "$FT" --config "$CONFIG" --threads "$THREADS" --quiet --set variant='"mme-sid"' "${sets[@]}" >> "$OUT/finetune.log" 2>&1; }
ev() {  # name, args...
  local name=$1; shift
  [ -f "$OUT/eval-$name.json" ] || mmesid evaluate --quiet --out "$OUT/eval-$name.json" "$@" > /dev/null
}
rm -rf "$FT/added_items"
for split in valid test; do
  ev "before-add-cold-$split" --data "$COLD" --run "$FT" --split $split --target-items "$COLD"
  ev "popularity-cold-$split" --data "$COLD" --popularity --split $split --target-items "$COLD"
  ev "random-cold-$split" --data "$COLD" --random --split $split --target-items "$COLD"
done
ev popularity-all-test --data "$COLD" --popularity
ev random-all-test --data "$COLD" --random
ev before-add-all-test --data "$COLD" --run "$FT"
ev sasrec-cold-test --data "$COLD" --run "$OUT/sasrec" --target-items "$COLD"
ev sasrec-all-test --data "$COLD" --run "$OUT/sasrec"
# The E_c / E_x rows of an item with no interactions, chosen on validation: the mean of the k text-nearest
# training items' rows (knnK), the mean of all training items (mean), or zero.
add() {  # init name: knnK | mean | zero
  case $1 in knn*) mmesid items add --run "$FT" --items "$COLD" --init knn --neighbours "${1#knn}" > /dev/null ;;
             *) mmesid items add --run "$FT" --items "$COLD" --init "$1" > /dev/null ;; esac
}
INITS="knn1 knn3 knn10 mean zero"
for init in $INITS; do
  [ -f "$OUT/eval-add-$init-cold-valid.json" ] && continue
  add "$init"
  ev "add-$init-cold-valid" --data "$COLD" --run "$FT" --split valid --target-items "$COLD"
  rm -rf "$FT/added_items"
done
best=$(python - "$OUT" $INITS <<'PY'
import json, sys
out = sys.argv[1]
print(max(sys.argv[2:], key=lambda i: json.load(open(f"{out}/eval-add-{i}-cold-valid.json"))["nDCG@10"]))
PY
)
log "best init on validation: $best"
add "$best"
ev "add-$best-cold-test" --data "$COLD" --run "$FT" --target-items "$COLD"
ev "add-$best-all-test" --data "$COLD" --run "$FT"
ev upper-bound-cold-test --data "$DATA" --run "$FULL_RUN" --target-items "$COLD"
ev upper-bound-all-test --data "$DATA" --run "$FULL_RUN"
log done; python benchmarks/cold_items_table.py "$OUT"
