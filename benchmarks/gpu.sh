#!/usr/bin/env bash
# Every GPU figure of issue 14 in one short run on a lent GPU (about 8 minutes on an H200), appended to
# benchmarks/RESULTS.md there and copied to $OUT (the device tool's folder that comes back):
#   tokenize   the bare ffhq-f16 encoder eager / compiled / CUDA graphs / channels_last, each with its
#              share of bf16 peak by FLOP count; one image at a time; the pipeline end to end (engine
#              local: Ray's cp312 wheel, 79 MB, does not fit the 64 MiB a call carries); the no-op
#              encoder's pipeline (the CPU side's ceiling on 16 cores);
#   train      talk2face-base at batch 192, seq 334: sdpa, flex, flex on packed rows; the real training
#              loop's MFU and data-wait share; operator profiles (profiles.txt);
#   gpu-tests  tests/test_gpu.py: flex's compiled kernel and gradients against SDPA, the staged, concurrent,
#              CUDA-graph encoder against one eager batch at a time;
#   generate   KV-cache decoding vs the release's way, bf16, batch 16;
#   gptface    gptface-base beside talk2face-base, when benchmarks/gptface.py exists.
#
#   benchmarks/gpu.sh --wheels       # here, once: .whl/ gets the wheels the GPU machine lacks (taming)
#   benchmarks/gpu.sh                # there: device run, carry [".whl"], timeout_s 600
#   benchmarks/gpu.sh --cpu-smoke    # here: every step at toy sizes on CPU, results to a scratch file
#
# Each step has its own time limit, and all of them end by GPU_SH_SECONDS (default 570: the device
# tool allows 600 a call), most important first: one that hangs costs its slot, not the run. A failed
# step is reported and the others still run; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-gpu}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"

if [ "$mode" = "--wheels" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl taming-transformers-rom1504==0.0.6
  ls -l .whl
  exit
fi

# The package without pip: pyproject's package-dir mapping as links (folder -> facecorpus.<folder>), so
# spawned read processes import it too; wheels carried in .whl/ go beside it.
site=$(mktemp -d)
cp -r facecorpus "$site/facecorpus"
for sub in converters shards trainer reports; do ln -s "$PWD/$sub" "$site/facecorpus/$sub"; done
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || exit 1
fi
export PYTHONPATH="$site" PYTHONUNBUFFERED=1

results=benchmarks/RESULTS.md
if [ "$mode" = "--cpu-smoke" ]; then
  py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
  export FACECORPUS_RESULTS="$out/RESULTS-smoke.md"
  results=$FACECORPUS_RESULTS
  : >"$results"
  tok=(--device cpu --preset tiny-f16 --images 40 --bare-images 32 --bare eager --one-at-a-time 4 --batch-size 16)
  noop=(--images 40 --bare-images 16 --batch-size 16)
  train=(--device cpu --batch 8 --steps 1 --warmup 1 --pack-width 1024 --loop-steps 3 --loop-samples 40)
  gen=(--threads 1 --batch 2 --steps 8 --baseline-steps 4)
  gptface=(--steps 1 --warmup 1 --faces 1 --batch 8)
  limits=(600 600 120 120 120 120)
elif [ "$mode" = "gpu" ]; then
  py=${PYTHON:-python3}
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$out/gpu.log"
  tok=(--device cuda --preset ffhq-f16 --images 12000 --bare-images 4096 --one-at-a-time 300
       --bare eager,default,reduce-overhead,default+channels_last --compile reduce-overhead --profile "$out/profiles.txt")
  noop=(--images 12000 --bare-images 1000)
  train=(--device cuda --preset talk2face-base --batch 192 --steps 10 --warmup 3 --profile "$out/profiles.txt")
  gen=(--device cuda --preset talk2face-base --batch 16 --dtype bf16)
  gptface=(--device cuda --steps 10 --warmup 2)
  limits=(190 220 90 45 45 45)
else
  echo "usage: benchmarks/gpu.sh [--cpu-smoke | --wheels]" >&2
  exit 2
fi
start=$(wc -c <"$results")
failed=()
deadline=$((SECONDS + ${GPU_SH_SECONDS:-570}))

step() {  # step NAME SECONDS COMMAND...: run one benchmark under its own time limit, logged to $out
  local name=$1 seconds=$2 t0=$SECONDS left=$((deadline - SECONDS))
  shift 2
  if [ "$left" -lt 30 ]; then
    echo "== $name: skipped, the run's time is up"
    failed+=("$name(skipped)")
    return
  fi
  [ "$seconds" -gt "$left" ] && seconds=$left
  echo "== $name (limit ${seconds} s)" | tee -a "$out/gpu.log"
  timeout "$seconds" "$@" >"$site/step.log" 2>&1   # the device tool brings back 8 files: one log for all
  local rc=$?
  cat "$site/step.log" >>"$out/gpu.log"
  tail -n 25 "$site/step.log"
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/gpu.log"
  [ $rc -eq 0 ] || failed+=("$name")
}

manifest=$(mktemp -d)   # the generated faces, made once, read by both tokenize steps
step tokenize "${limits[0]}" "$py" benchmarks/tokenization.py "${tok[@]}" --engine local --manifest "$manifest"
step train "${limits[1]}" "$py" benchmarks/train.py "${train[@]}" --variants sdpa,flex,flex-packed --loop flex
# The GPU twins of the CPU correctness tests (skipped without a GPU: the smoke checks they collect and run).
step gpu-tests "${limits[2]}" "$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py
step tokenize-noop "${limits[3]}" "$py" benchmarks/tokenization.py --encoder noop "${noop[@]}" --engine local \
  --manifest "$manifest"
if [ -f benchmarks/gptface.py ]; then
  step gptface "${limits[4]}" "$py" benchmarks/gptface.py "${gptface[@]}"
fi
step generate "${limits[5]}" "$py" benchmarks/generate.py "${gen[@]}"

tail -c +"$((start + 1))" "$results" >"$out/RESULTS-gpu.md"
echo "figures appended to $results, copied to $out/RESULTS-gpu.md; whole log $out/gpu.log"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
