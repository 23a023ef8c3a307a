#!/usr/bin/env bash
# GPU check: CUDA maps equal CPU maps, and the speed benchmark on the GPU, in under 5 minutes.
#
#   bash bench/gpu_check.sh            # on a CUDA machine (no internet needed)
#   bash bench/gpu_check.sh --cpu      # the same steps on the CPU: CUDA parts skipped cleanly
#
# The machine needs torch, torchvision, numpy, pillow and opencv.  grad-cam (and its ttach,
# tqdm, scikit-learn), pytest and the peers' torchcam/captum are installed from wheel files when
# missing: put them in $WHEELS (default: ../wheels, beside the checkout), e.g. made elsewhere
# with `pip download grad-cam ttach pytest torchcam captum -d wheels`.  Nothing is downloaded.
# Results go under $OUT (default bench/results/): gpu_tests.txt, speed.json, speed.md.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
WHEELS="${WHEELS:-../wheels}"
DEVICE=cuda
[ "${1:-}" = "--cpu" ] && DEVICE=cpu
mkdir -p "$OUT"
log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }

# 1. What this machine has; install what is missing from the wheel folder (offline).
python - <<'EOF' | tee "$OUT/environment.txt"
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
for name in ("torchvision", "numpy", "PIL", "cv2", "pytorch_grad_cam", "ttach", "pytest", "torchcam", "captum"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except ImportError:
        print(name, "MISSING")
EOF
missing=$(awk '$2=="MISSING"{print $1}' "$OUT/environment.txt")
for module in $missing; do
  case $module in
    pytorch_grad_cam) pkg=grad-cam ;; PIL) pkg=pillow ;; cv2) pkg=opencv-python-headless ;;
    *) pkg=$module ;;
  esac
  if [ -d "$WHEELS" ]; then
    log "installing $pkg from $WHEELS"
    python -m pip install --quiet --no-index --find-links "$WHEELS" "$pkg" >>"$OUT/gpu_check.log" 2>&1 \
      || log "could not install $pkg from $WHEELS"
  else
    log "$pkg missing and no wheel folder $WHEELS"
  fi
done
python -c "import pytorch_grad_cam, pytest" 2>/dev/null || { log "grad-cam or pytest missing: cannot test"; exit 2; }

if [ "$DEVICE" = cuda ] && ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  log "no CUDA device: run with --cpu for the CPU part"; exit 3
fi

# 2. CUDA maps equal CPU maps (the engine's methods), and GPU memory back to baseline after an
#    out-of-memory error.  On the CPU these tests skip themselves; the CPU equality tests run.
log "tests on $DEVICE"
if [ "$DEVICE" = cuda ]; then
  selection="cuda or gpu"
else
  selection="conv_layer_of_multi_input or cuda or gpu"
fi
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_reliability.py \
  -k "$selection" -rs >"$OUT/gpu_tests.txt" 2>&1
tests=$?
tail -3 "$OUT/gpu_tests.txt" | tee -a "$OUT/gpu_check.log"

# 3. The benchmark: the GPU target case (ResNet-50 batch 32) and the others at batch 32 and 8.
log "benchmark on $DEVICE"
if [ "$DEVICE" = cuda ]; then
  cases="resnet50:32,resnet18:32,resnet18:8,demo:32,forgery224:32"
  args=(--device cuda --rounds 5 --threads 4)
else
  cases="resnet18:1,demo:16"
  args=(--device cpu --rounds 3 --threads 1 --skip memory,calls)
fi
timeout 150 python bench/speed.py --cases "$cases" "${args[@]}" --out "$OUT/speed.json" \
  >"$OUT/speed.md" 2>>"$OUT/gpu_check.log"
bench=$?
cat "$OUT/speed.md"
log "done: tests exit $tests, benchmark exit $bench (results in $OUT)"
[ $tests -eq 0 ] && [ $bench -eq 0 ]
