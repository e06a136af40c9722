#!/usr/bin/env bash
# Reproduce the Beauty fine-tuning runs of benchmarks/results_finetune.md on a CPU machine.
#   bash benchmarks/finetune_beauty.sh [variant ...]      (default: mme-sid e4srec mme-sid-random wo-fusion)
# Other names: any variant (se-sid, me, concat-mlp, ...), wo-fusion (mme-sid, fusion off),
# e4srec-fusion (E4SRec input with the frequency-aware fusion head).
# Environment (paths relative to the repository root): BEAUTY (the authors' Beauty files), DATA (prepared
# Beauty, made from BEAUTY if missing), EC, ET (embedding files), SIDS (quantiser export), OUT (runs root),
# CONFIG (budget), PAR (how many runs at once; each uses `threads` CPU threads from the config).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
BEAUTY=${BEAUTY:-../shared/data/beauty}
DATA=${DATA:-data/beauty}
EC=${EC:-$BEAUTY/sasrec_item_emb.npy}
ET=${ET:-benchmarks/out/beauty_text_minilm.safetensors}
SIDS=${SIDS:-benchmarks/out/quantize-beauty/export}
OUT=${OUT:-benchmarks/out/finetune-beauty}
CONFIG=${CONFIG:-configs/finetune_beauty_cpu.toml}
PAR=${PAR:-2}
[ -d "$DATA" ] || mmesid data prepare "$BEAUTY" --format authors --out "$DATA"
mkdir -p "$OUT"

run() {  # name, extra --set args...
  local name=$1; shift
  echo "[$(date -u +%H:%M:%S)] start $name"
  /usr/bin/time -v nice -n 10 mmesid finetune --data "$DATA" --emb c="$EC" --emb t="$ET" --sids "$SIDS" \
      --out "$OUT/$name" --config "$CONFIG" --quiet "$@" > "$OUT/$name.log" 2>&1
  echo "[$(date -u +%H:%M:%S)] done $name: $(grep -E '^test' "$OUT/$name.log" || echo FAILED)"
}

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(mme-sid e4srec mme-sid-random wo-fusion)
i=0
for v in "${variants[@]}"; do
  case $v in
    wo-fusion) run wo-fusion --set variant='"mme-sid"' --set fusion=false & ;;
    e4srec-fusion) run e4srec-fusion --set variant='"e4srec"' --set fusion=true & ;;
    *) run "$v" --set variant="\"$v\"" & ;;
  esac
  i=$((i + 1))
  if [ $((i % PAR)) -eq 0 ]; then wait; fi
done
wait
