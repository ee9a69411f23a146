#!/usr/bin/env bash
# Profile the shipped latency tables and validate them, printing how long each step took.
# Run on a quiet machine (nothing else busy): every figure is a real measurement.
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
  printf '%-40s %8.1f s  %s\n' "$name" "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" "$(head -c 300 "$log/$name.json")"
}

# ProxylessNAS space at 224 on the three CPU runtimes; the default search's space (proxyless at 32x32 with the
# digits' 10 classes); FBNet (CIFAR-100 variant); then end-to-end validation of the 224 tables.
for device in cpu-onnxruntime cpu-torch; do
  step "profile-$device-proxyless-224" $hwnas profile --device "$device" --space proxyless --resolution 224 --quiet
done
for device in cpu-onnxruntime cpu-litert; do
  step "profile-$device-proxyless-32" $hwnas profile --device "$device" --space proxyless --resolution 32 \
    --num-classes 10 --quiet
done
step "profile-cpu-onnxruntime-fbnet-cifar100-32" $hwnas profile --device cpu-onnxruntime --space fbnet-cifar100 --quiet
for device in cpu-onnxruntime cpu-torch; do
  step "validate-$device-proxyless-224" $hwnas validate --table "latency_tables/${device}__proxyless__224.json" \
    --n 50 --out "$log/validate-$device-proxyless-224" --quiet
done
step "profile-cpu-litert-proxyless-224" $hwnas profile --device cpu-litert --space proxyless --resolution 224 --quiet
step "validate-cpu-litert-proxyless-224" $hwnas validate --table latency_tables/cpu-litert__proxyless__224.json \
  --n 50 --out "$log/validate-cpu-litert-proxyless-224" --quiet
for device in cpu-torch cpu-litert; do
  step "profile-$device-fbnet-cifar100-32" $hwnas profile --device "$device" --space fbnet-cifar100 --quiet
done
