#!/usr/bin/env bash
# Shared by mmdetection/train.sh and mmsegmentation/train.sh:
#   launch_downstream.sh SCOPE CONFIG PRETRAIN GPUS [train_downstream.py args]
# Checks that CONFIG's backbone starts from PRETRAIN (check_transfer.py; stops on failure), then
# trains: plain python for GPUS=1 (one GPU, or the CPU), torchrun with GPUS processes otherwise.
# Environment: PYTHON (default: python), PORT (default 29500), BRANCH (teacher|student: the branch
# the export must hold; default: its algorithm's).
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $(basename "$0") SCOPE CONFIG PRETRAIN GPUS [train_downstream.py args]" >&2
    exit 2
fi
SCOPE=$1
CONFIG=$2
PRETRAIN=$3
GPUS=$4
shift 4
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON=${PYTHON:-python}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

SCOPE_OF_CONFIG=$("$PYTHON" -c "from mmengine.config import Config; import sys; \
print(Config.fromfile(sys.argv[1]).get('default_scope'))" "$CONFIG")
if [ "$SCOPE_OF_CONFIG" != "$SCOPE" ]; then
    echo "$CONFIG is an ${SCOPE_OF_CONFIG} config; this script trains ${SCOPE} configs" >&2
    exit 2
fi

"$PYTHON" "$ROOT/tools/analysis_tools/check_transfer.py" "$CONFIG" "$PRETRAIN" \
    ${BRANCH:+--branch "$BRANCH"} || {
    echo "check_transfer failed: not training (see the report above)" >&2
    exit 1
}

if [ "$GPUS" -eq 1 ]; then
    exec "$PYTHON" "$ROOT/tools/benchmarks/train_downstream.py" "$CONFIG" \
        --pretrained "$PRETRAIN" "$@"
fi
exec "$PYTHON" -m torch.distributed.run --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" \
    "$ROOT/tools/benchmarks/train_downstream.py" "$CONFIG" --pretrained "$PRETRAIN" \
    --launcher pytorch "$@"
