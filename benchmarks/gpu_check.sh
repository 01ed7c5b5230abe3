#!/usr/bin/env bash
# GPU checks in one short run (for a machine with NVIDIA GPUs; ~5 minutes):
#   1. one fp16 AMP training step (GradScaler) and the training step rate, on the GPU budget's DynUNet;
#   2. a 2-process NCCL DDP training run when 2+ GPUs are present (same global batch as 1 process);
#   3. GPU inference timing: sliding window over a 300x512x512 phantom CT.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (creates .venv with a CUDA torch if none is importable)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/ctseg-gpu-check}}
mkdir -p "$OUT"
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! $PY -c "import torch, ctseg; assert torch.cuda.is_available()" 2>/dev/null; then
  python3 -m venv "$OUT/venv" && PY="$OUT/venv/bin/python"
  $PY -m pip install --quiet torch && $PY -m pip install --quiet -e .
fi
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpus.txt"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")

$PY - "$OUT" <<'PYEOF' | tee "$OUT/amp_step.txt"
import sys, time, torch
from ctseg.config import ModelConfig
from ctseg.model import build_model, build_loss
from ctseg.train.loop import Amp, train_step
dev = torch.device("cuda")
cfg = ModelConfig(architecture="dynunet", channels=(32, 64, 128, 256, 320, 320), strides=((2, 2, 2),) * 5,
                  num_res_units=0, deep_supervision=True)
net = build_model(cfg, 1, 7).to(dev)
opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
scaler = torch.amp.GradScaler("cuda", enabled=True)
amp = Amp(True, torch.float16, "cuda")
x = torch.randn(2, 1, 128, 128, 128, device=dev); y = torch.randint(0, 7, (2, 1, 128, 128, 128), device=dev)
loss_fn = build_loss("dice_ce")
r = train_step(net, (x, y), loss_fn, opt, scaler, amp, grad_clip=12.0)
print(f"fp16 AMP step: loss {r.loss:.4f} skipped {r.skipped} scale {scaler.get_scale():.0f}")
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10):
    train_step(net, (x, y), loss_fn, opt, scaler, amp, grad_clip=12.0)
torch.cuda.synchronize()
print(f"DynUNet 32..320, batch 2, 128^3, fp16: {10 / (time.perf_counter() - t):.2f} steps/s, "
      f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
PYEOF

$PY - "$OUT" <<'PYEOF'
import sys
from pathlib import Path
from ctseg.phantom import write_phantom_dataset
write_phantom_dataset(Path(sys.argv[1]) / "ds", 4, shape=(64, 96, 96), spacing_mm=(2.5, 2.0, 2.0))
PYEOF
COMMON=(--epochs 2 --set train.steps_per_epoch=20 --set train.val_every=2 --set train.num_workers=2)
$PY -m ctseg train "$OUT/ds" --out "$OUT/run1" --model-dir "$OUT/model1" --device cuda "${COMMON[@]}" \
  | tee "$OUT/train_1gpu.txt"
if [ "$NGPU" -ge 2 ]; then
  $PY -m torch.distributed.run --nproc_per_node=2 -m ctseg train "$OUT/ds" --out "$OUT/run2" --model-dir "$OUT/model2" \
    "${COMMON[@]}" | tee "$OUT/train_ddp.txt"
else
  echo "1 GPU: DDP (NCCL) run skipped" | tee "$OUT/train_ddp.txt"
fi

$PY benchmarks/predict.py --only speed --workdir "$OUT/predict" --out "$OUT/predict.json" 2>&1 | tail -8 \
  | tee "$OUT/predict.txt" || true
$PY - "$OUT" <<'PYEOF' | tee "$OUT/gpu_infer.txt"
import sys, time, torch
from pathlib import Path
import ctseg
from ctseg.io import read_image
out = Path(sys.argv[1])
model = ctseg.load_model(out / "predict" / "model_big", device="cuda")
ct = read_image(out / "predict" / "ct.nii")
ctseg.segment(ct, model, device="cuda")
torch.cuda.synchronize(); t = time.perf_counter()
ctseg.segment(ct, model, device="cuda")
torch.cuda.synchronize()
print(f"GPU segment() on {ct.shape} CT: {time.perf_counter() - t:.2f} s")
PYEOF
echo "results in $OUT"
