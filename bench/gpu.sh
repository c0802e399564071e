#!/usr/bin/env bash
# The extraction benchmark on a GPU, one command: MiniLM-L6 and a BERT-base-shaped model (12 layers, hidden
# 768, 12 heads, intermediate 3072; random weights cost the same as trained ones), all 872 SST-2 dev sentences.
# Writes bench/results/extract_throughput_gpu_{minilm,bert_base}.json: sequences/s of the bare forward,
# --cls-only and full capture, the capture/bare ratio, with and without the writer thread, and the codecs.
#   GLUE_DIR=../shared/glue bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export GLUE_DIR="${GLUE_DIR:-$(cd .. && pwd)/shared/glue}"
mkdir -p bench/out bench/results
[ -d bench/out/bert_base ] || .venv/bin/bertology init-model --out bench/out/bert_base --layers 12 --hidden 768 \
    --heads 12 --intermediate 3072 --seed 0
for name in minilm bert_base; do
  model=$([ "$name" = minilm ] && echo minilm-l6 || echo bench/out/bert_base)
  "$PY" bench/extract_throughput.py --model "$model" --n 872 --device cuda --out "bench/out/gpu_$name"
  cp "bench/out/gpu_$name/extract_throughput.json" "bench/results/extract_throughput_gpu_$name.json"
done
