#!/usr/bin/env bash
# Train the decoder RMT checkpoint (the pretrained all-MiniLM-L6-v2 run as a causal LM, 16 memory tokens, 64-token
# segments, curriculum to 4 segments) on BABILong-style qa1, evaluate it on held-out data and copy it into
# checkpoints/qa1_decoder. Run it again after an interruption: training resumes where it stopped (runs/qa1_decoder/resume).
#
# Facts: bAbI v1.2 en-10k (train split for training, test split for evaluation), from BABI_DIR;
# noise: builtin:pydoc (Python's documentation prose) for training, QuALITY question text (NOISE_FILE) for evaluation.
# The answer is generated; rmt eval scores the exact match of the generated answer tokens (the place, then the
# end-of-answer token), 1,000 samples a length, with Wilson 95% intervals, at 1x, 2x, 4x and 8x the trained length.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RMT=${RMT:-.venv/bin/rmt}
PY=${PY:-.venv/bin/python}
BABI_DIR=${BABI_DIR:-../shared/data/babi/en-10k}
NOISE_FILE=${NOISE_FILE:-../shared/data/quality/questions.dev.txt}
RUN=${RUN:-runs/qa1_decoder}
THREADS=${THREADS:-2}

resume=(); [[ -d "$RUN/resume" ]] && resume=(--resume)
# A GPT-2 or Llama from scratch does not learn qa1's binding on this CPU (docs/experiments/decoder-binding/); the
# pretrained MiniLM learns it within a few hundred steps at a fine-tuning rate. Each stage ends once two
# validations in a row reach 99% (256 samples, the natural mix, one question).
nice "$RMT" train --architecture decoder --task qa1 --backbone minilm --out "$RUN" \
  --stages 1x64,2x64,4x64 --mem 16 --batch-size 32 --lr 1e-4 --warmup-steps 50 --max-steps 800 --eval-every 50 \
  --val-samples 256 --target-accuracy 0.99 --patience 2 --babi-dir "$BABI_DIR" --noise-file builtin:pydoc \
  --threads "$THREADS" --quiet "${resume[@]}"

nice "$RMT" eval --checkpoint "$RUN" --segments 4,8,16,32 --samples 1000 --batch-size 100 \
  --babi-dir "$BABI_DIR" --split test --noise-file "$NOISE_FILE" --no-progress --json "$RUN/eval.json"
"$PY" -m rmt_core.model_card "$RUN"

# The shipped folder: the checkpoint, its log, eval.json and model card (no resume state, no stage folders).
rm -rf checkpoints/qa1_decoder.tmp
mkdir -p checkpoints/qa1_decoder.tmp
cp "$RUN"/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json,training_log.jsonl,eval.json,README.md} \
  checkpoints/qa1_decoder.tmp/
rm -rf checkpoints/qa1_decoder
mv checkpoints/qa1_decoder.tmp checkpoints/qa1_decoder
