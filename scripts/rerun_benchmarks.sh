#!/usr/bin/env bash
# Rerun every table docs/benchmarks.md shows, section by section, into bench-results/.
#   bash scripts/rerun_benchmarks.sh                 # every section (hours on a 2-core machine)
#   bash scripts/rerun_benchmarks.sh bench simulate  # some: bench fuse loader simulate plan serve
#                                                    #   device loading (need a writable cgroup)
# Each command writes its report under the name of the table it fills; read them beside the doc.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh "cpu,zoo,dev,plot,serve"
out="${RESULTS_DIR:-bench-results}"
models="$out/models"
mkdir -p "$out" "$models"
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(bench fuse loader simulate plan serve device loading)
wants() { [[ " ${sections[*]} " == *" $1 "* ]]; }

if wants bench; then
  python -m model_zoo export head0 head1 resnet_heads resnet18 mobilenet_v3_small squeezenet1_1 \
    -o "$models"
  # Two heads on one backbone
  fusedinf-cc fuse cls="$models/head0.onnx" seg="$models/head1.onnx" --share-inputs auto \
    -o "$out/heads.onnx"
  fusedinf-cc fuse cls="$models/head0.onnx" seg="$models/head1.onnx" --share-inputs auto --aot \
    -o "$out/heads-aot.onnx"
  fusedinf-cc bench --fused "$out/heads.onnx" --runs 50 --json "$out/heads.json" \
    --plot "$out/heads.png"
  fusedinf-cc bench --fused "$out/heads-aot.onnx" --runs 50 --json "$out/heads-aot.json"
  # Two heads on a ResNet-18 trunk (the third column: both sides with side files)
  fusedinf-cc fuse cls="$models/resnet_head0.onnx" seg="$models/resnet_head1.onnx" \
    --share-inputs auto -o "$out/rheads.onnx"
  fusedinf-cc fuse cls="$models/resnet_head0.onnx" seg="$models/resnet_head1.onnx" \
    --share-inputs auto --aot -o "$out/rheads-aot.onnx"
  fusedinf-cc bench --fused "$out/rheads.onnx" --runs 50 --json "$out/rheads.json" \
    --plot "$out/rheads.png"
  fusedinf-cc bench --fused "$out/rheads-aot.onnx" --runs 50 --json "$out/rheads-aot.json"
  # Unrelated models
  unrelated=("$models/resnet18.onnx" "$models/mobilenet_v3_small.onnx" "$models/squeezenet1_1.onnx")
  fusedinf-cc fuse "${unrelated[@]}" --share-inputs auto -o "$out/unrelated.onnx"
  fusedinf-cc fuse "${unrelated[@]}" --share-inputs auto --aot -o "$out/unrelated-aot.onnx"
  fusedinf-cc bench --fused "$out/unrelated.onnx" --runs 50 --json "$out/unrelated.json" \
    --plot "$out/unrelated.png"
  fusedinf-cc bench --fused "$out/unrelated-aot.onnx" --runs 50 --json "$out/unrelated-aot.json"
  # The separate side in the fused layout, and the heap's part in the peak
  for artifact in unrelated unrelated-aot rheads rheads-aot; do
    fusedinf-cc bench --fused "$out/$artifact.onnx" --runs 50 --separate-side-files \
      --json "$out/$artifact-side-files.json"
  done
  fusedinf-cc bench --fused "$out/unrelated.onnx" --runs 30 --separate-side-files \
    --json "$out/heap-as-is.json"
  setarch "$(uname -m)" -R fusedinf-cc bench --fused "$out/unrelated.onnx" --runs 30 \
    --separate-side-files --json "$out/heap-no-aslr.json"
  MALLOC_MMAP_THRESHOLD_=1048576 fusedinf-cc bench --fused "$out/unrelated.onnx" --runs 30 \
    --separate-side-files --json "$out/heap-mmap-threshold.json"
  # Scaling, stacking, one model's request
  python scripts/bench_scaling.py --json "$out/scaling.json" --plot "$out/scaling.png"
  python scripts/bench_scaling.py --stack --counts 4,8 --json "$out/scaling-stack.json"
  python scripts/bench_stack.py --aot --json "$out/stack-aot.json"
  python scripts/bench_stack.py --json "$out/stack.json"
  python scripts/bench_stack.py --aot --arch resnet18 --counts 2,4 --rounds 10 \
    --json "$out/stack-resnet18.json"
  for arch in transformer_encoder vit convnext; do
    python scripts/bench_stack.py --aot --arch "$arch" --json "$out/stack-$arch-aot.json"
    python scripts/bench_stack.py --arch "$arch" --json "$out/stack-$arch.json"
  done
  python scripts/bench_parts.py --json "$out/parts.json"
fi

if wants fuse; then
  python scripts/bench_compiler.py | tee "$out/compiler.txt"
fi

if wants loader; then
  python -m pytest tests/runtime/test_loader.py -k "memory" -v | tee "$out/loader.txt"
fi

if wants simulate; then
  python scripts/simulate_zoo.py --json "$out/sim.json"
  python scripts/simulate_zoo.py --overlapping --aot --budget 75% --requests 800 \
    --json "$out/sim-overlap.json"
fi

if wants plan; then
  python scripts/simulate_zoo.py --plan --aot --requests 1000 --budget 50% \
    --json "$out/plan-zoo.json"
  python scripts/simulate_zoo.py --plan --aot --drifting --requests 1000 --budget 75% \
    --json "$out/plan-drift.json"
  python scripts/simulate_zoo.py --plan --requests 1000 --budget 50% \
    --json "$out/plan-zoo-portable.json"
  FUSEDINF_CACHE_DIR="$(mktemp -d)" python scripts/bench_plan.py --json "$out/plan-time.json"
  python scripts/bench_plan.py --models 24 --functions 60 --requests 4000 --replays 3 \
    --json "$out/plan-mlp.json"
  python scripts/bench_plan.py --models 24 --functions 60 --requests 4000 --replays 3 \
    --budget 50% --json "$out/plan-mlp50.json"
  for profile in orin-nano-nvme orin-nano-sd; do  # where a miss reads storage
    python scripts/simulate_zoo.py --plan --aot --requests 1000 --budget 50% \
      --device-profile "$profile" --json "$out/plan-zoo-$profile.json"
    python scripts/simulate_zoo.py --plan --aot --drifting --requests 1000 --budget 75% \
      --device-profile "$profile" --json "$out/plan-drift-$profile.json"
  done
fi

if wants serve; then
  python scripts/load_test_serve.py --clients 4 --requests 40 --json "$out/serve-load.json"
  python scripts/bench_workers.py --json "$out/workers.json"
  python scripts/bench_activations.py --json "$out/activations.json"
fi
if wants device; then
  python -m model_zoo export head0 head1 resnet18 mobilenet_v3_small squeezenet1_1 -o "$models"
  [ -f "$out/heads-aot.onnx" ] || fusedinf-cc fuse cls="$models/head0.onnx" \
    seg="$models/head1.onnx" --share-inputs auto --aot -o "$out/heads-aot.onnx"
  [ -f "$out/unrelated-aot.onnx" ] || fusedinf-cc fuse "$models/resnet18.onnx" \
    "$models/mobilenet_v3_small.onnx" "$models/squeezenet1_1.onnx" --share-inputs auto --aot \
    -o "$out/unrelated-aot.onnx"
  # As on an edge box: three runs of each, the profiles alternating.
  for i in 1 2 3; do
    for profile in none orin-nano-nvme orin-nano-sd; do
      flags=(); [ "$profile" != none ] && flags=(--device-profile "$profile")
      python scripts/simulate_zoo.py --aot --policy gdsf "${flags[@]}" \
        --json "$out/device-zoo50-$profile-$i.json"
    done
    for profile in none orin-nano-sd; do
      flags=(); [ "$profile" != none ] && flags=(--device-profile "$profile")
      python scripts/simulate_zoo.py --aot --policy gdsf --budget 80% "${flags[@]}" \
        --json "$out/device-zoo80-$profile-$i.json"
    done
  done
  for i in 1 2; do  # what dropping an evicted bundle's pages costs a warm workload
    python scripts/simulate_zoo.py --aot --policy gdsf --json "$out/device-warm-drop-$i.json"
    python scripts/simulate_zoo.py --aot --policy gdsf --keep-page-cache \
      --json "$out/device-warm-keep-$i.json"
  done
  # The budget and the limit agree: the budget (73.7 MiB) plus the baseline the runs above
  # report (baseline_rss_bytes, 137 MiB here); set yours from your own runs.
  python scripts/simulate_zoo.py --aot --policy gdsf --requests 1000 --memory-limit 211MiB \
    --read-bandwidth 67MB/s --json "$out/device-limit-1000.json"
  for artifact in heads-aot unrelated-aot; do
    for profile in none orin-nano-nvme orin-nano-sd; do
      flags=(); [ "$profile" != none ] && flags=(--device-profile "$profile")
      fusedinf-cc bench --fused "$out/$artifact.onnx" --runs 20 --rounds 3 \
        --separate-side-files "${flags[@]}" --json "$out/device-bench-$artifact-$profile.json"
    done
  done
  for workload in overlapping drifting; do
    for profile in none orin-nano-sd; do
      flags=(); [ "$profile" != none ] && flags=(--device-profile "$profile")
      python scripts/simulate_zoo.py "--$workload" --aot --policy lru,gdsf,belady --budget 75% \
        "${flags[@]}" --json "$out/device-$workload-$profile.json"
    done
  done
  # GDSF weighing a miss's read, against LRU, under the card (decision miss-cost)
  python scripts/simulate_zoo.py --drifting --aot --policy lru,gdsf --budget 75% \
    --loading linear,interleaved --device-profile orin-nano-sd --json "$out/device-gdsf-drifting.json"
  for profile in none orin-nano-sd; do  # one model's cold request, part against alone
    flags=(); [ "$profile" != none ] && flags=(--device-profile "$profile")
    python scripts/bench_parts.py --cold --sets ocr,resnet_squeezenet --kinds aot --rounds 5 \
      "${flags[@]}" --json "$out/device-parts-cold-$profile.json"
  done
  for profile in none orin-nano-sd; do  # LRU and the clairvoyant policy at 80%
    flags=(); [ "$profile" != none ] && flags=(--device-profile "$profile")
    python scripts/simulate_zoo.py --aot --policy lru,belady --budget 80% --loading linear \
      "${flags[@]}" --json "$out/device-zoo80-lru-belady-$profile.json"
  done
fi
if wants loading; then
  for profile in none orin-nano-nvme orin-nano-sd; do
    flags=(); [ "$profile" != none ] && flags=(--device-profile "$profile")
    python scripts/bench_loading.py --rounds 5 "${flags[@]}" \
      --json "$out/loading-cold-$profile.json"
  done
  for profile in none orin-nano-nvme; do
    flags=(); [ "$profile" != none ] && flags=(--device-profile "$profile")
    python scripts/simulate_zoo.py --aot --policy gdsf --budget 25% \
      --loading bulk,linear,interleaved "${flags[@]}" --json "$out/loading-zoo25-$profile.json"
  done
  python scripts/simulate_zoo.py --aot --policy gdsf --budget 25% --requests 200 \
    --loading bulk,linear,interleaved --device-profile orin-nano-sd \
    --json "$out/loading-zoo25-orin-nano-sd.json"
  python scripts/bench_streaming.py --json "$out/streaming.json"
  for i in 1 2 3; do  # reading the next bundle ahead, on its own
    python scripts/simulate_zoo.py --aot --requests 300 --policy gdsf --prefetch \
      --device-profile orin-nano-nvme --json "$out/prefetch-zoo-nvme-$i.json"
    python scripts/simulate_zoo.py --drifting --aot --requests 300 --budget 75% --policy gdsf \
      --prefetch --device-profile orin-nano-nvme --json "$out/prefetch-drifting-nvme-$i.json"
  done
  python scripts/simulate_zoo.py --aot --requests 300 --policy gdsf --prefetch \
    --device-profile orin-nano-sd --json "$out/prefetch-zoo-sd.json"
fi
echo "wrote $out/"
