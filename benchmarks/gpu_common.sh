# Shared by the GPU scripts (benchmarks/gpu_finetune.sh, gpu_baselines.sh); sourced from the repository root.
# Sets LIMIT/T0/C/OUT/RUNS/DEVICE/SMOKE/PY/DATA/EC/ET, left(), log(), mm(), quantize_ct(); installs carried wheels for missing
# packages; writes $OUT/env.json (package versions, device).
set -u
LIMIT=${LIMIT:-540}
T0=$(date +%s)
C=${CARRY:-.devcarry}
OUT=${OUT:?}
RUNS=${RUNS:-benchmarks/out/gpu-runs}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
PY=${PYTHON:-python3}
DATA=${DATA:-$C/beauty}
EC=${EC:-$C/E_c.safetensors}
ET=${ET:-$C/E_t.safetensors}
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
log() { echo "[$(date -u +%T), $(left) s left] $*" | tee -a "$OUT/steps.log"; }
mm() { $PY -m mmesid.cli "$@"; }

if [ "$DEVICE" != cpu ]; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1; fi
need=$($PY -c "import importlib.util as u; print(' '.join(m for m in ('transformers', 'peft', 'accelerate', \
'safetensors', 'tokenizers', 'tqdm', 'gguf', 'bitsandbytes') if u.find_spec(m) is None))")
if [ -n "$need" ] && ls "$C"/wheels/*.whl > /dev/null 2>&1; then
  log "installing from $C/wheels (missing: $need)"
  $PY -m pip install -q --no-index --no-deps --target "$RUNS/site" "$C"/wheels/*.whl > "$OUT/pip.log" 2>&1
  export PYTHONPATH=$PYTHONPATH:$PWD/$RUNS/site
fi
$PY -c "
import importlib, importlib.metadata as md, json, torch
v = {m: md.version(m) for m in ('torch', 'transformers', 'peft', 'accelerate')}
for m in ('bitsandbytes', 'gguf'):
    try: importlib.import_module(m); v[m] = md.version(m)
    except Exception: v[m] = None
v['cuda'] = torch.version.cuda; v['device'] = torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'
print(json.dumps(v))" > "$OUT/env.json" 2> "$OUT/env.err" || { log "the Python environment lacks a package: $(tail -1 "$OUT/env.err")"; exit 1; }
log "environment $(cat "$OUT/env.json")"


# the MM-RQ-VAE on (E_c, E_t), once per RUNS folder (shared by the scripts); Q = its folder
Q=$RUNS/quantize
quantize_ct() {
  [ -f "$Q/metrics.json" ] && return 0
  [ "$(left)" -gt 60 ] || { log "no time left for the quantiser"; return 1; }
  log "quantize"
  local qs=()
  [ "$SMOKE" = 1 ] && qs=(--set epochs=2)
  timeout "$(left)" $PY -m mmesid.cli quantize train --data "$DATA" --emb c="$EC" --emb t="$ET" --out "$Q" \
      --device "$DEVICE" --quiet "${qs[@]}" > "$OUT/quantize.log" 2>&1 \
      || { log "quantize stopped: $(tail -1 "$OUT/quantize.log")"; return 1; }
}
