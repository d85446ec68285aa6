#!/usr/bin/env bash
# The GPU checks of the serving path, for one call on a lent GPU machine (../shared/gpu/README.md):
#
#   1. here: echo /.gpu-kit/ >> .git/info/exclude; ../shared/gpu/make-kit.sh .gpu-kit PART_MIB
#      cp ../shared/gpu/unpack.sh .gpu-kit/   (../shared does not travel)
#   2. there, one call per part: mkdir -p /tmp/parts && cp .gpu-kit/part-NN /tmp/parts/
#   3. there: bash benchmarks/gpu_session.sh   (carry .gpu-kit/unpack.sh; writes under $OUT)
#
# Checks, in order: the service starts with `--provider cuda` and with `auto` WITHOUT
# LD_LIBRARY_PATH (the engine preloads CUDA and cuDNN from the nvidia-* packages, laid out here
# as pip lays them out), then `python -m benchmarks.gpu` (parity, raw, served per worker count,
# low-load latency).
set -u
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
. "${GENSEN_GPU_UNPACK:-.gpu-kit/unpack.sh}"
# pip's layout: nvidia/ beside onnxruntime/ in one site-packages (the image keeps it elsewhere)
nvidia=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null)
[ -n "$nvidia" ] && [ ! -e /tmp/site/nvidia ] && ln -s "$nvidia" /tmp/site/nvidia
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1

get() {  # URL [JSON body]: the answer's body; fails on a status other than 200 (httpx, not curl)
  python3 -c 'import sys, httpx
r = httpx.post(sys.argv[1], content=sys.argv[2]) if len(sys.argv) > 2 else httpx.get(sys.argv[1])
sys.stdout.write(r.text); sys.exit(r.status_code != 200)' "$@"
}

start_check() {  # provider port: start the service without LD_LIBRARY_PATH, save /info and log
  env -u LD_LIBRARY_PATH python3 -m service --provider "$1" --port "$2" > "$out/start-$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 120); do
    get "http://127.0.0.1:$2/ready" > /dev/null 2>&1 && break
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.5
  done
  get "http://127.0.0.1:$2/info" > "$out/info-$1.json" 2>&1
  get "http://127.0.0.1:$2/embed" '{"inputs": ["A man plays a guitar."]}' 2>&1 | head -c 200 > "$out/embed-$1.txt"
  kill -TERM "$pid" 2> /dev/null; wait "$pid"; echo "exit $?" >> "$out/start-$1.log"
}
start_check cuda 8091
start_check auto 8092
timeout 420 python3 -m benchmarks.gpu --provider cuda --out "$out/gpu-cuda.json" > "$out/gpu.log" 2>&1
tail -n 20 "$out/gpu.log"
