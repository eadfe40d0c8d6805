#!/usr/bin/env bash
# Trains the bundled default model and the binary test fixture from scratch, on one CPU thread.
#
#   bash models/train_default.sh            # all stages, about 1 h 40 min on one core
#   WORK=/some/dir bash models/train_default.sh
#
# Needs: a Debian/Ubuntu system (apt-get download + dpkg -x fetch the corpus, no root needed),
# PyTorch (pip install 'bitnet[train]'), and a built bitnet (to convert and evaluate).
# Stages whose run directory already holds summary.json are skipped, so a rerun resumes.
# Every stage writes log.txt (timestamped, tokens/s) and log.jsonl into its run directory;
# models/README.md quotes those logs. Set PID_FILE to have training processes record their pid
# (other users of the machine can then pause them with SIGSTOP/SIGCONT).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PWD}/python${PYTHONPATH:+:$PYTHONPATH}"
WORK="${WORK:-build/train-default}"
PY="nice -n 10 python3 -m bitnet.train"
PIDS=(${PID_FILE:+--pid-file "$PID_FILE"})
mkdir -p "$WORK"
DATA="$WORK/data"
COMMON=(--data "$DATA" --steps 1500 --batch-size 8 --seq-len 256 --warmup 100 "${PIDS[@]}")

# 1. Corpus (KJV from Debian), 2% validation split, SentencePiece BPE tokenizer, token ids.
[ -f "$DATA/data.json" ] || $PY data --out "$DATA" --vocab 3072

# 2. Ternary BitNet b1.58 from scratch: 5 layers, dim 256, 8 heads / 4 KV heads, FFN 768.
[ -f "$WORK/ternary/summary.json" ] || \
  $PY pretrain "${COMMON[@]}" --out "$WORK/ternary" --quant ternary --lr 2e-3 --max-minutes 44

# 3. Full-precision model of the same size, trained the same way and for as many steps as the
#    ternary run made (plain LLaMA blocks, no sub-norms: the off-the-shelf starting point of
#    BitDistill).
STEPS=$(python3 -c "import json; print(json.load(open('$WORK/ternary/summary.json'))['steps'])")
[ -f "$WORK/fp/summary.json" ] || \
  $PY pretrain "${COMMON[@]}" --steps "$STEPS" --out "$WORK/fp" --quant none --no-sub-norms \
    --lr 1e-3 --max-minutes 30

# 4. BitDistill: sub-norms inserted, ternary weights, 60 steps of continued training, then
#    CE + logits KL + Q/K/V relation KL at the last layer, teacher = the full-precision model.
[ -f "$WORK/bitdistill/summary.json" ] || \
  $PY distill --data "$DATA" --teacher "$WORK/fp" --out "$WORK/bitdistill" --steps 300 \
    --batch-size 8 --seq-len 256 --warmup 20 --lr 1e-3 --continue-steps 60 --max-minutes 11 \
    "${PIDS[@]}"

# 5. The binary (1-bit BitNet) test fixture: 2 layers, dim 128.
[ -f "$WORK/binary/summary.json" ] || \
  $PY pretrain --data "$DATA" --out "$WORK/binary" --quant binary --dim 128 --ffn 256 --layers 2 \
    --heads 4 --kv-heads 2 --steps 300 --batch-size 8 --seq-len 256 --warmup 30 --lr 3e-3 \
    --max-minutes 4 --eval-every 100 "${PIDS[@]}"

# 6. Export (Hugging Face BitNet layout), convert, evaluate with the engine. The shipped ternary
#    model is whichever of runs 2 and 4 has the lower validation perplexity.
SHIP=$(python3 -c "import json,sys; r={n: json.load(open(f'$WORK/{n}/summary.json'))['val_ppl'] for n in ('ternary','bitdistill')}; print(min(r, key=r.get))")
echo "shipping run: $SHIP"
$PY export "$WORK/$SHIP" --out "$WORK/hf-default" --tokenizer "$DATA"
$PY export "$WORK/binary" --out "$WORK/hf-binary" --tokenizer "$DATA"
python3 -c "import bitnet; bitnet.convert('$WORK/hf-default', 'models/bitnet-kjv-5m-tq2_0.gguf', weight_type='tq2_0', embedding_type='f16', overwrite=True)"
python3 -c "import bitnet; bitnet.convert('$WORK/hf-binary', 'models/bitnet-kjv-binary-tiny-q1_0.gguf', embedding_type='f16', overwrite=True)"
$PY evaluate models/bitnet-kjv-5m-tq2_0.gguf --data "$DATA" --run "$WORK/$SHIP" --out "$WORK/eval-default.json"
$PY evaluate models/bitnet-kjv-binary-tiny-q1_0.gguf --data "$DATA" --run "$WORK/binary" --out "$WORK/eval-binary.json"
