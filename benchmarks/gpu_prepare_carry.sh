#!/usr/bin/env bash
# Fill .devcarry/ (git-ignored) with what benchmarks/gpu_finetune.sh needs on a machine without network,
# and print its size (the device tool carries at most 64 MiB per call).
#   DATA=data/beauty EC=<SASRec run>/item_embeddings.safetensors ET=<E_t file> SMOLLM2=<imported folder> \
#       bash benchmarks/gpu_prepare_carry.sh
# WHEELS="transformers peft accelerate tokenizers huggingface_hub safetensors" adds those wheels (no
# dependencies; PYVER, default 3.11, must match the GPU machine's Python). GGUF=<file> also cuts the GGUF
# file into 48 MiB pieces under .devcarry-gguf/ (git-ignored): carry .devcarry in the first call and one
# piece per later call (a warm machine keeps what earlier calls carried); gpu_finetune.sh joins and
# imports them once all are there.
set -euo pipefail
cd "$(dirname "$0")/.."
C=.devcarry
mkdir -p "$C"
rm -rf "$C/beauty" && cp -r "${DATA:?prepared Beauty folder}" "$C/beauty"
cp "${EC:?E_c file}" "$C/E_c.safetensors"
cp "${ET:?E_t file}" "$C/E_t.safetensors"
if [ -n "${SMOLLM2:-}" ]; then
  rm -rf "$C/smollm2-shape" && mkdir "$C/smollm2-shape"
  for f in config.json tokenizer.json tokenizer_config.json chat_template.jinja generation_config.json; do
    [ -f "$SMOLLM2/$f" ] && cp "$SMOLLM2/$f" "$C/smollm2-shape/"
  done
fi
if [ -n "${WHEELS:-}" ]; then
  # shellcheck disable=SC2086
  pip download -q --no-deps --only-binary :all: --python-version "${PYVER:-3.11}" -d "$C/wheels" $WHEELS
fi
if [ -n "${GGUF:-}" ]; then
  rm -rf .devcarry-gguf && mkdir .devcarry-gguf
  split -b 48M -d "$GGUF" .devcarry-gguf/smollm2.gguf.part-
  ls -l .devcarry-gguf
fi
du -sh "$C"/* | sort -h
echo "total: $(du -sk "$C" | cut -f1) KiB (limit 65536 KiB per call)"
