#!/usr/bin/env bash
# Profile the shipped CPU latency tables into latency_tables/ and validate the 224 ones, printing how long each
# step took (python tools/tables_report.py LOGDIR turns the log into docs/latency_tables.md's tables).
# Run on a quiet machine (nothing else busy): every figure is a real measurement. A table already in
# latency_tables/ is resumed (only its missing ops are measured): delete it first to re-profile it from scratch.
# The cuda-torch tables come from .ci/gpu_check.sh on a GPU machine.
#   tools/build_tables.sh [logdir]
set -euo pipefail
cd "$(dirname "$0")/.."
log=${1:-runs/build-tables}
mkdir -p "$log"
hwnas=${HWNAS:-.venv/bin/hwnas}

step() {  # step NAME COMMAND...: run, print wall time, keep the JSON result
  local name=$1; shift
  local start=$(date +%s.%N)
  "$@" --json > "$log/$name.json"
  local end=$(date +%s.%N)
  printf '%-40s %8.1f s  %s\n' "$name" "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" \
    "$(head -c 300 "$log/$name.json")"
}

profile() {  # profile DEVICE SPACE RESOLUTION [NUM_CLASSES]: latency_tables/DEVICE__SPACE__RESOLUTION.json
  local device=$1 space=$2 resolution=$3
  step "profile-$device-$space-$resolution" $hwnas profile --device "$device" --space "$space" \
    --resolution "$resolution" ${4:+--num-classes "$4"} --out "latency_tables/${device}__${space}__$resolution.json" \
    --quiet
}

validate() {  # validate DEVICE SPACE RESOLUTION: 50 whole networks against the table's estimates
  local name="$1-$2-$3"
  step "validate-$name" $hwnas validate --table "latency_tables/$1__$2__$3.json" --n 50 --out "$log/validate-$name" \
    --quiet
}

# ProxylessNAS space at 224 on the three CPU runtimes and their end-to-end validation; the default search's space
# (proxyless at 32x32 with the digits' 10 classes); ONNX Runtime at 64 and 128 (the predictors' resolutions);
# FBNet (CIFAR-100 variant); MnasNet's factorized space at 224 (1590 ops: every block choice after every width of
# the previous block; tools/build_predictor.py --space mnasnet makes it with its predictor).
# tests/test_scripts.py checks that these are exactly the shipped CPU tables.
profile cpu-onnxruntime proxyless 224
profile cpu-torch proxyless 224
profile cpu-onnxruntime proxyless 32 10
profile cpu-litert proxyless 32 10
profile cpu-onnxruntime fbnet-cifar100 32
validate cpu-onnxruntime proxyless 224
validate cpu-torch proxyless 224
profile cpu-litert proxyless 224
validate cpu-litert proxyless 224
profile cpu-onnxruntime proxyless 64
profile cpu-onnxruntime proxyless 128
profile cpu-onnxruntime mnasnet 224
profile cpu-litert mnasnet 224
