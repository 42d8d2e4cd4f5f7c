#!/usr/bin/env bash
# The sparsity sweep of docs/sweep.md, start to end: train a small LSTM and EGRU on
# the offline news corpus, prune each iteratively (0..95 %), run every level over
# the first 40,000 tokens of the news test split, priced on the cmos45 and
# spinnaker2 chip presets, and draw the figures and the table. Work files go to
# runs/sweep (git-ignored); results, figures and table to docs/sweep. Every stage
# resumes when rerun: a trained model is not trained again, existing prune levels
# and finished sweep points are skipped.
# Usage (from the repository root): bash docs/sweep/run.sh
set -euo pipefail
WORK=${WORK:-runs/sweep}
DOCS=${DOCS:-docs/sweep}
LEVELS=0,20,40,60,80,90,95
mkdir -p "$WORK" "$DOCS"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

train_and_prune() {  # $1 = egru | lstm; one torch thread each, the two run side by side
  [ -f "$WORK/$1_dense.safetensors" ] || \
  python -m training.train_lm --model "$1" --corpus news --vocab-size 5000 --emb 64 --hidden 128,64 \
    --epochs 3 --max-train-tokens 500000 --max-eval-tokens 20000 --batch-size 64 --bptt 35 \
    --dropout-emb 0 --dropout-in 0.1 --dropout-hidden 0.1 --dropout-out 0.1 --dropconnect 0.1 \
    --threads 1 --quiet --out "$WORK/$1_dense.safetensors"
  python -m training.prune --checkpoint "$WORK/$1_dense.safetensors" --corpus news --out-dir "$WORK/pruned" \
    --levels "$LEVELS" --epochs-per-level 1 --max-train-tokens 250000 --max-eval-tokens 20000 \
    --batch-size 64 --bptt 35 --lr 1e-3 --dropout 0.1 --threads 1 --quiet
}

stamp "training and pruning LSTM and EGRU"
train_and_prune lstm >> "$WORK/lstm.log" 2>&1 &
pid_lstm=$!
train_and_prune egru >> "$WORK/egru.log" 2>&1 &
pid_egru=$!
wait $pid_lstm
wait $pid_egru
stamp "trained and pruned"
cat "$WORK/lstm.log" "$WORK/egru.log"

stamp "sweep"
python -m eventsim.cli sweep "$WORK"/pruned/*.safetensors --corpus news --tokens 40000 --results "$DOCS/results.jsonl" \
  --chip cmos45 --chip spinnaker2 --workers 2 --no-progress
stamp "plots"
python -m eventsim.cli plot sweep "$DOCS/results.jsonl" --out "$DOCS" --title "news, LSTM/EGRU 128-64"
stamp "done"
