#!/usr/bin/env bash
# GPU smoke test: the `micro` toy pipeline on CUDA in bf16, with per-stage wall times.
#   bash benchmarks/gpu_smoke.sh [OUT_DIR]
# Exits 0 with a skip message when no CUDA GPU is visible (never part of CI).
set -euo pipefail
PY=${PYTHON:-python}
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_smoke: skipped: no CUDA GPU visible to torch (this check needs a GPU machine and the project installed)"
  exit 0
fi
OUT=${1:-runs/gpu-smoke}
rm -rf "$OUT"; mkdir -p "$OUT"
$PY -c "import torch; print('gpu_smoke:', torch.cuda.get_device_name(0), 'torch', torch.__version__, 'bf16', torch.cuda.is_bf16_supported())"
TOY="$OUT/toy"; DATA="$TOY/data"; COMMON=(--dtype bfloat16 --no-progress)

stage() {  # stage NAME COMMAND...: run, print wall time and the last line of its JSON summary
  local name=$1; shift
  local start=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1 || { echo "gpu_smoke: stage $name FAILED"; tail -20 "$OUT/$name.log"; exit 1; }
  printf 'gpu_smoke: %-8s %6.1fs\n' "$name" "$(echo "$(date +%s.%N) - $start" | bc)"
}

stage toy     sgt world build --kind toy --preset micro --out "$TOY" --no-progress
stage trigger sgt trigger --model "$TOY/base" --data "$DATA/defense_train.jsonl" --out "$OUT/trigger" \
              --length 4 --no-tied --lr 0.03 --epochs 5 --batch-size 16 --max-length 128 \
              --eval-data "$DATA/harm_eval.jsonl" --eval-n 64 "${COMMON[@]}"
stage align   sgt align --model "$TOY/base" --trigger "$OUT/trigger" --data "$DATA/defense_train.jsonl" \
              --out "$OUT/aligned" --rows none --lr 5e-4 --epochs 3 --batch-size 8 --grad-accum 1 \
              --max-length 128 --eval-data "$DATA/harm_eval.jsonl" --eval-n 64 "${COMMON[@]}"
stage lora    sgt align --model "$TOY/base" --trigger "$OUT/trigger" --data "$DATA/defense_train.jsonl" \
              --out "$OUT/aligned-lora" --rows none --lora --lr 3e-3 --epochs 2 --batch-size 8 --grad-accum 1 \
              --max-length 128 "${COMMON[@]}"
stage attack  sgt attack --model "$OUT/aligned" --data "$DATA/attack_train.jsonl" --shots 32 --lr 1e-3 \
              --epochs 5 --batch-size 8 --max-length 128 --out "$OUT/attacked" "${COMMON[@]}"
stage harm    sgt eval harm --model "$OUT/attacked" --data "$DATA/harm_eval.jsonl" --n none \
              --max-new-tokens 32 --out "$OUT/harm" "${COMMON[@]}"
stage benign  sgt eval benign --model "$OUT/aligned" --tasks "$TOY/tasks/toy_mc.yaml" --num-fewshot 0 \
              --exact-match "$DATA/benign_eval.jsonl" --out "$OUT/benign" "${COMMON[@]}"
stage run     sgt run configs/micro.yaml --out "$OUT/run" --set world.out="$TOY" --set dtype=bfloat16
$PY - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
t = json.load(open(f"{out}/trigger/metrics.json")); a = json.load(open(f"{out}/aligned/metrics.json"))
h = json.load(open(f"{out}/harm/metrics.json")); r = json.load(open(f"{out}/run/results.json"))
print("gpu_smoke: trigger refusal", t.get("refusal_rate_no_trigger"), "->", t.get("refusal_rate_trigger"),
      "| aligned refusal (no trigger)", a.get("refusal_rate_no_trigger"), "| attacked harmful", h["harmful_rate"])
print("gpu_smoke: run budgets to break", {k: v["budget_to_break"] for k, v in r["defenses"].items()})
PYEOF
echo "gpu_smoke: OK"
