# Shared by scripts/gpu_train.sh and scripts/gpu_next.sh (sourced, not run): the environment of a GPU session's
# runs and the helpers that train and evaluate them. Needs PY, DATA and WORK set.
export RMT_MINILM_DIR=$DATA/minilm PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
BABI=$DATA/babi/en-10k
NOISE=$DATA/quality/questions.dev.txt
mkdir -p "$WORK"
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START ))s] $*"; }
train() {  # name, then rmt train arguments
  local name=$1; shift
  $PY -m rmt_cli.main train --out "$WORK/$name" "$@" > "$WORK/$name.log" 2>&1
  stamp "trained $name (exit $?): $(tail -c 300 "$WORK/$name.log")"
}
evaluate() {  # name, segments, samples: eval.json of the run, held-out data, large batches
  $PY scripts/eval_checkpoint.py "$WORK/$1" --segments "$2" --samples "$3" --batch-size 1000 \
    --babi-dir "$BABI" --noise-file "$NOISE" --max-batch-tokens 600000000 > "$WORK/$1.eval.log" 2>&1
  stamp "evaluated $1 (exit $?): $(tail -c 400 "$WORK/$1.eval.log")"
}
stamp "start on $($PY -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')"
