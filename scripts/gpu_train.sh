#!/usr/bin/env bash
# Train the shipped checkpoints on one GPU: several runs side by side (a small learning-rate sweep per task),
# then evaluate every run on held-out data (bAbI en-10k test facts, QuALITY question noise) and pick one per task.
#
#   DATA=runs/gpu_data WORK=/tmp/rmt-gpu BUDGET=330 bash scripts/gpu_train.sh
#
# DATA holds babi/en-10k/, quality/questions.dev.txt and minilm/ (the tokenizer files of all-MiniLM-L6-v2).
# Training reads the en-10k *train* facts and builtin:vocab noise (built-in sentences plus words from the whole
# tokenizer vocabulary, so real text holds no unseen tokens); evaluation the *test* facts and QuALITY noise.
set -u
PY=${PY:-python3}
DATA=${DATA:-runs/gpu_data}
WORK=${WORK:-/tmp/rmt-gpu}
BUDGET=${BUDGET:-330}          # seconds of training per run (the stage running then is finished)
EVAL_SAMPLES=${EVAL_SAMPLES:-1000}
LONG=${LONG:-1,2,4,8,16,32,64,128,256,512,1024,2048,4096}
LONG499=${LONG499:-1,2,4,8,16,32,64,128,256,512,1024,2048,4096}
EVAL499_SAMPLES=${EVAL499_SAMPLES:-200}
source "$(dirname "${BASH_SOURCE[0]}")/gpu_lib.sh"

COMMON=(--batch-size "${BATCH:-128}" --warmup-steps 100 --max-steps 3000 --eval-every "${EVAL_EVERY:-100}" --val-samples "${VAL:-512}"
        --babi-dir "$BABI" --noise-file builtin:vocab --time-budget-s "$BUDGET" --threads 2 --quiet
        --stage-eval-segments 1,2,4,8,16,32 --stage-eval-samples "${STAGE_EVAL_SAMPLES:-200}"
        --stage-eval-babi-dir "$BABI" --stage-eval-noise-file "$NOISE")
MEM64=1x16,2x16,2x32,2x64,3x64,4x64,5x64,6x64,7x64,8x64,9x64,10x64
REASON64=1x32,2x32,2x64,3x64,4x64,5x64,6x64
MEM499=1x16,2x16,2x64,2x128,2x256,2x499,3x499,4x499,5x499,6x499,7x499

train memorize_a --task memorize --stages $MEM64 --lr 3e-4 "${COMMON[@]}" &
train memorize_b --task memorize --stages $MEM64 --lr 1e-3 "${COMMON[@]}" &
train detect_a --task detect --stages $MEM64 --lr 3e-4 --val-multiples 1,2 "${COMMON[@]}" &
train detect_b --task detect --stages $MEM64 --lr 1e-3 --val-multiples 1,2 "${COMMON[@]}" &
train reason_a --task reason --stages $REASON64 --lr 3e-4 --target-accuracy 0.95 "${COMMON[@]}" &
# reason_b first learns the direction words on one question form (--question-form of: with both forms mixed,
# matching directions alone gains nothing), on short noise-free segments, then the full mix, noise and length.
( train reason_of --task reason --stages 1x24 --question-form of --lr 1e-3 --target-accuracy 0.99 \
    "${COMMON[@]}" --time-budget-s "$(( BUDGET / 3 ))"
  train reason_b --task reason --init-from "$WORK/reason_of" --stages 1x24,1x64,2x64,3x64,4x64,5x64,6x64 --lr 5e-4 \
    --target-accuracy 0.95 "${COMMON[@]}" ) &
train memorize499 --task memorize --stages $MEM499 --lr 3e-4 --batch-size "${BATCH499:-64}" --warmup-steps 100 --max-steps 3000 \
  --eval-every "${EVAL_EVERY:-100}" --val-samples "${VAL:-256}" --babi-dir "$BABI" --noise-file builtin:vocab --time-budget-s "$BUDGET" --threads 2 --quiet \
  --stage-eval-segments 1,2,4,8 --stage-eval-samples "${STAGE_EVAL_SAMPLES:-100}" --stage-eval-babi-dir "$BABI" --stage-eval-noise-file "$NOISE" &
wait

for name in memorize_a memorize_b detect_a detect_b reason_a reason_b; do
  [ -f "$WORK/$name/config.json" ] && evaluate $name "$LONG" "$EVAL_SAMPLES" &
done
[ -f "$WORK/memorize499/config.json" ] && evaluate memorize499 "$LONG499" "$EVAL499_SAMPLES" &
wait
$PY scripts/pick_checkpoints.py "$WORK" "$WORK/ship" memorize=memorize_a,memorize_b detect=detect_a,detect_b \
  reason=reason_a,reason_b memorize-499=memorize499
stamp "done"
