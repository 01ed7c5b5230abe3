#!/usr/bin/env bash
# GPU checks in one short run (for a machine with NVIDIA GPUs; about 6 minutes), plus, in parallel on the machine's
# spare CPU cores, the training-defaults sweep (benchmarks/train_sweep.py) when the real CT is at hand:
#   1. one fp16 AMP training step (GradScaler) and the training step rate, on the GPU budget's DynUNet (128^3);
#   2. `ctseg train` on CUDA under torchrun (NCCL): 2 processes when 2+ GPUs are present, else 1;
#   3. the GPU plan on the real CT (`--budget gpu`, fp16): one epoch with its step time;
#   4. GPU inference timing: segment() on a 300x512x512 phantom CT.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR] [DATA_DIR]
#   DATA_DIR holds totalseg_abdomen/ (default ../shared/data). An offline machine without ctseg's pure-Python
#   dependencies can bring them as wheels in .whl/ (installed into a private target folder, never the system).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/ctseg-gpu-check}}
DATA=${2:-../shared/data}
WORK=$(mktemp -d /tmp/ctseg-gpu-XXXX)  # data, runs and models; OUT gets only the text summaries
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! $PY -c "import monai, pydicom, nibabel" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/ctseg-site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/ctseg-site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpus.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpus.txt"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
NCPU=$(nproc)

SWEEP_PID=""
if [ -d "$DATA/totalseg_abdomen" ] && [ "$NCPU" -ge 8 ]; then
  # 6 variants x 2 threads on the CPU cores the GPU runs leave free.
  $PY benchmarks/train_sweep.py --data "$DATA" --out "$WORK/sweep" --steps "${SWEEP_STEPS:-1500}" --parallel 6 \
    --threads 2 --variants plan,lr1e-3_nomirror,lr3e-3_nomirror,lr3e-3_mirror01,lr1e-2_nomirror,lr3e-3_nomirror_noaug \
    >"$OUT/sweep.txt" 2>&1 &
  SWEEP_PID=$!
  # Per-epoch validation Dice of every variant, gathered as it is written (survives a run cut short).
  ( while kill -0 "$SWEEP_PID" 2>/dev/null; do
      for f in "$WORK"/sweep/*/run/metrics.csv; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done \
        >"$OUT/sweep_metrics.txt" 2>/dev/null
      sleep 20
    done ) &
fi

$PY - <<'PYEOF' 2>&1 | tee "$OUT/amp_step.txt"
import time, torch
from ctseg.config import ModelConfig
from ctseg.model import build_model, build_loss
from ctseg.train.loop import Amp, train_step
dev = torch.device("cuda")
torch.backends.cudnn.benchmark = True
cfg = ModelConfig(architecture="dynunet", channels=(32, 64, 128, 256, 320, 320), strides=((2, 2, 2),) * 5,
                  num_res_units=0, deep_supervision=True)
net = build_model(cfg, 1, 7).to(dev)
opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
scaler = torch.amp.GradScaler("cuda", enabled=True)
amp = Amp(True, torch.float16, "cuda")
x = torch.randn(2, 1, 128, 128, 128, device=dev); y = torch.randint(0, 7, (2, 1, 128, 128, 128), device=dev)
loss_fn = build_loss("dice_ce")
for _ in range(3):
    r = train_step(net, (x, y), loss_fn, opt, scaler, amp, grad_clip=12.0)
print(f"fp16 AMP step: loss {r.loss:.4f} skipped {r.skipped} scale {scaler.get_scale():.0f}")
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10):
    train_step(net, (x, y), loss_fn, opt, scaler, amp, grad_clip=12.0)
torch.cuda.synchronize()
print(f"DynUNet 32..320, batch 2, 128^3, fp16: {10 / (time.perf_counter() - t):.2f} steps/s, "
      f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
PYEOF

$PY - "$WORK" <<'PYEOF'
import sys
from pathlib import Path
from ctseg.phantom import write_phantom_dataset
write_phantom_dataset(Path(sys.argv[1]) / "ds", 4, shape=(64, 96, 96), spacing_mm=(2.5, 2.0, 2.0))
PYEOF
NPROC=$(( NGPU >= 2 ? 2 : 1 ))
timeout 240 $PY -m torch.distributed.run --standalone --nproc_per_node=$NPROC -m ctseg train "$WORK/ds" \
  --out "$WORK/run_ddp" --model-dir "$WORK/model_ddp" --device cuda --epochs 2 --set train.steps_per_epoch=20 \
  --set train.val_every=2 --set train.num_workers=2 2>&1 | tail -5 | tee "$OUT/train_torchrun.txt"
echo "torchrun processes: $NPROC (GPUs: $NGPU)" | tee -a "$OUT/train_torchrun.txt"

if [ -d "$DATA/totalseg_abdomen" ]; then
  $PY - "$WORK" "$DATA" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from train_sweep import build_dataset
build_dataset(Path(sys.argv[2]) / "totalseg_abdomen", Path(sys.argv[1]) / "real_ds")
PYEOF
  timeout 300 $PY -m ctseg train "$WORK/real_ds" --out "$WORK/run_gpu_plan" --model-dir "$WORK/model_gpu_plan" \
    --budget gpu --device cuda --epochs 1 --labels liver=5,spleen=1,kidney_right=2,kidney_left=3,aorta=52 \
    --set train.steps_per_epoch=100 --set train.num_workers=4 2>&1 | tail -3
  { echo "GPU plan on the real CT, 1 epoch (fp16):"; cat "$WORK/run_gpu_plan/metrics.csv";
    grep -A4 "^train:" "$WORK/run_gpu_plan/plan.yaml"; } | tee "$OUT/gpu_plan_real_ct.txt"
fi

$PY - "$WORK" <<'PYEOF' 2>&1 | tee "$OUT/gpu_infer.txt"
import sys, time, torch
from pathlib import Path
import ctseg
from ctseg.phantom import make_phantom
import numpy as np
from ctseg.volume import Geometry
ct, _ = make_phantom(Geometry((300, 512, 512), (1.0, 0.7, 0.7)))
model = ctseg.load_model(Path(sys.argv[1]) / "model_ddp", device="cuda")
ctseg.segment(ct, model, device="cuda")
torch.cuda.synchronize(); t = time.perf_counter()
mask = ctseg.segment(ct, model, device="cuda")
torch.cuda.synchronize()
print(f"GPU segment() on a {ct.shape} CT: {time.perf_counter() - t:.2f} s; mask on the input grid: {mask.geometry == ct.geometry}")
PYEOF

if [ -n "$SWEEP_PID" ]; then
  wait "$SWEEP_PID"
  for f in "$WORK"/sweep/*/run/metrics.csv; do echo "== $f"; cat "$f"; done >"$OUT/sweep_metrics.txt"
  tail -9 "$OUT/sweep.txt"
fi
echo "results in $OUT"
