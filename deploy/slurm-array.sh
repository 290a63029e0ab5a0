#!/bin/bash
# Tokenize a data set with a Slurm job array: one array task per partition.
#
#   sbatch deploy/slurm-array.sh                         # 64 partitions, 16 at a time
#   sbatch --array=0-127%32 deploy/slurm-array.sh        # another N: just change the range
#
# Every task runs the same command. unitok reads SLURM_ARRAY_TASK_ID and
# SLURM_ARRAY_TASK_COUNT (and _MIN/_STEP, so --array=1-64 works too) and does
# only the shards its partition owns (a hash of each shard's path relative to
# --in), with its own manifest (manifest-IIIII-of-NNNNN.jsonl) and lock in the
# shared --out. Use a contiguous range (0-63 or 1-64, optionally with :step):
# a list such as --array=1,5,9 is refused; pass --partition I/N yourself then.
#
# Retries: resubmitting the same array (or `scontrol requeue JOBID_TASK`)
# resumes each partition from its manifest: published shards are skipped and
# a half-written output is redone. --signal asks unitok to stop cleanly two
# minutes before the time limit. `unitok prep status --out "$OUT" --in "$IN"`
# lists what is done, failed and missing, per partition.
#
#SBATCH --job-name=unitok-prep
#SBATCH --array=0-63%16
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
#SBATCH --output=unitok-prep-%A_%a.log
set -euo pipefail

CKPT=${CKPT:-/models/unitok_tokenizer.pth}
IN=${IN:-/data/features}
OUT=${OUT:-/data/codes}

# exec: unitok itself receives Slurm's SIGTERM.
exec unitok encode --device=cuda --checkpoint="$CKPT" --in="$IN" --out="$OUT"
