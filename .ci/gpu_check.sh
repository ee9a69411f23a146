#!/usr/bin/env bash
# Verify hwnas's CUDA path on a GPU machine in one go and keep everything it prints (docs/measurements.md):
# the GPU tests, cuda-torch tables at 32 and 224, their validation against whole networks, a torchvision
# network end to end, and a closed-loop search on the GPU. Each step has its own time limit and the whole run a
# deadline, so a slow step costs only itself; steps run in order of importance.
#
#   .ci/gpu_check.sh OUTDIR [DEADLINE_S]        (DEVICE=cuda-torch, PY=python3 by default)
#
# Runs from the repository root without installing (PYTHONPATH=.): GPU images often ship torch but cannot
# reach PyPI. Tables are profiled into OUTDIR (a fresh OUTDIR measures every op; the shipped tables in
# latency_tables/ are left alone) and validated there.
set -u
out=${1:?usage: .ci/gpu_check.sh OUTDIR [DEADLINE_S]}
deadline=${2:-480}
device=${DEVICE:-cuda-torch}
py=${PY:-python3}
search_threads=${SEARCH_THREADS:-8}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
start=$SECONDS

step() {  # step NAME LIMIT_S COMMAND...: run COMMAND under min(LIMIT_S, time left), log to OUTDIR/NAME.log
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - (SECONDS - start)))
    if ((left < 20)); then
        echo "== $name: skipped, ${left} s left of the ${deadline} s deadline" | tee -a "$out/summary.txt"
        return
    fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc in $((SECONDS - t0)) s (limit $limit s): $*" | tee -a "$out/summary.txt"
    tail -n 25 "$out/$name.log"
}

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$py" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))'
    nproc
} 2>&1 | tee "$out/machine.txt"

hwnas=("$py" -m hwnas.cli)
step devices 30 "${hwnas[@]}" devices
step tests 90 "$py" -m pytest -q -rs -p no:cacheprovider tests/test_runtimes.py tests/test_tensorrt_adb.py \
    tests/test_export.py -k "gpu or cuda or tensorrt"
step profile32 90 "${hwnas[@]}" profile --device "$device" --space proxyless --resolution 32 --quiet \
    --out "$out/${device}__proxyless__32.json"
step validate32 60 "${hwnas[@]}" validate --table "$out/${device}__proxyless__32.json" --n 16 \
    --out "$out/val32" --quiet
step search 200 "${hwnas[@]}" search --device "$device" --out "$out/search" --set num_threads="$search_threads"
step profile224 120 "${hwnas[@]}" profile --device "$device" --space proxyless --resolution 224 --quiet \
    --out "$out/${device}__proxyless__224.json"
step validate224 60 "${hwnas[@]}" validate --table "$out/${device}__proxyless__224.json" --n 16 \
    --out "$out/val224" --quiet
step bench_mnv2 40 "${hwnas[@]}" bench --device "$device" torchvision:mobilenet_v2
echo "== total $((SECONDS - start)) s" | tee -a "$out/summary.txt"
