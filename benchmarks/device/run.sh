#!/bin/bash
# On a lent GPU machine (the `run` tool of this workplace; README "GPU"): one stage per call, so
# that a machine lost mid-call loses one stage. Needs .gpu/ (benchmarks/device/bundle.py), carried.
#   bash benchmarks/device/run.sh timings        # benchmarks/gpu_timings.py -> $OUT/gpu.json (limit 300 s)
#   bash benchmarks/device/run.sh train [FLAGS]  # DelpNet width 64 on the GPU -> $OUT (limit 480 s)
# Stage 2's FLAGS are added to `train delpnet` (e.g. --psf-model exact).
T0=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
export NAPARI_REFOCUS_WHEELS=$PWD/.gpu/wheels NAPARI_REFOCUS_DATA=$PWD/.gpu/data
LOG=$OUT/log.txt
stage=$1; shift
{ nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv; nproc; free -g | head -2
  python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"; } 2>&1 | tee -a "$LOG"
if [ "$stage" = timings ]; then
  timeout 300 python3 benchmarks/gpu_timings.py --field .gpu/infocus.tif --json "$OUT/gpu.json" --no-write >> "$LOG" 2>&1
  echo "timings rc=$? at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
  tail -25 "$LOG"
elif [ "$stage" = train ]; then
  timeout 480 python3 -m napari_refocus.cli train delpnet --width 64 --device cuda --epochs 80 --seed 0 \
      --data-workers 12 --out /tmp/d64 "$@" 2>&1 | tr '\r' '\n' | grep -v -E "(it/s|s/it)\]" | cut -c1-400 >> "$LOG"
  echo "train rc=${PIPESTATUS[0]} at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
  cp /tmp/d64/delpnet.safetensors /tmp/d64/delpnet_eval.json /tmp/d64/delpnet.md "$OUT"/ 2>/dev/null \
    || cp /tmp/d64/checkpoints/best.safetensors "$OUT"/best.safetensors
  grep -E '^\{"epoch": (1|10|20|40|60|80),' "$LOG" | cut -c1-200
else
  echo "usage: run.sh timings | train [FLAGS]"; exit 2
fi
ls -la "$OUT"
