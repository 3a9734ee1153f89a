#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md, in stages that each finish within 10 minutes.
# Results go to $OUT (or ./gpu-results): markdown tables and JSON lines, to be copied into
# docs/benchmarks.md with the device, date, commit and command.
#
#   bash benchmarks/gpu_session.sh check      # GPU tests, synthesize table, eager step throughput
#   bash benchmarks/gpu_session.sh compiled   # compiled step throughput (one config per process)
#   bash benchmarks/gpu_session.sh negatives  # synthetic negatives' loss, eager vs compiled
#   bash benchmarks/gpu_session.sh learning   # short pretraining runs + kNN (demo grid)
#   bash benchmarks/gpu_session.sh input      # input pipeline: CPU vs GPU path, end to end
#   bash benchmarks/gpu_session.sh generators # the generators study (3 seeds), longer runs
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
out=${OUT:-gpu-results}
mkdir -p "$out"
stage=${1:-check}

info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, timm, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)"
  nproc
  date -u +%Y-%m-%dT%H:%M:%SZ
}

case "$stage" in
  check)
    info | tee "$out/env.txt"
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/syn2co/test_cuda.py \
      tests/trainer/test_cuda_trainer.py 2>&1 | tail -15 | tee "$out/gpu_tests.txt"
    timeout 150 python3 benchmarks/synthesize_table.py --device cuda > "$out/synthesize_cuda.md" 2>&1
    tail -25 "$out/synthesize_cuda.md"
    timeout 240 python3 benchmarks/train_throughput.py --all --modes eager \
      --out "$out/throughput_eager.jsonl" 2>&1 | grep -v '^+' | tail -12
    ;;
  compiled)
    info > "$out/env.txt"
    timeout 560 python3 benchmarks/train_throughput.py --all --modes compiled \
      --configs mocov3:none,moby:none,moby:synco-v2 --steps 15 --repeats 3 \
      --out "$out/throughput_compiled.jsonl" 2>&1 | grep -v '^+' | tail -12
    ;;
  negatives)
    info > "$out/env.txt"
    timeout 560 python3 benchmarks/compile_table.py --device cuda > "$out/compile_cuda.md" 2>&1
    tail -25 "$out/compile_cuda.md"
    ;;
  learning)
    info > "$out/env.txt"
    timeout 560 python3 benchmarks/learning_sweep.py --grid demo --device cuda --workers 8 \
      --out "$out/sweep.jsonl" 2>&1 | grep '^{' | cut -c1-300
    ;;
  input)
    info > "$out/env.txt"
    # ImageNet-sized JPEGs are generated into /tmp on the first call and reused after, from
    # the CIFAR-10 JPEG archive $CIFAR_ARCHIVE when it is set (random images otherwise)
    timeout 560 python3 benchmarks/input_pipeline.py --device cuda --workers 8,16 --compile \
      --data /tmp/syn2co-jpegs ${CIFAR_ARCHIVE:+--cifar-archive "$CIFAR_ARCHIVE"} \
      --out "$out/input_pipeline.jsonl" 2>&1 | tail -20
    ;;
  generators)
    info > "$out/env.txt"
    # one seed per call (SEEDS=1 bash ... for the next): 6 configurations of 3,000 steps
    timeout 560 python3 benchmarks/learning_sweep.py --grid generators --seeds "${SEEDS:-0}" \
      --steps 3000 --device cuda --workers 8 --out "$out/generators.jsonl" 2>&1 | grep '^{' | cut -c1-300
    ;;
  *)
    echo "unknown stage $stage (check, compiled, negatives, learning, input, generators)" >&2
    exit 2
    ;;
esac
