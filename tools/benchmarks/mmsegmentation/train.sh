#!/usr/bin/env bash
# Fine-tune an mmseg benchmark config from an exported backbone (export.py --target mmseg):
#   tools/benchmarks/mmsegmentation/train.sh CONFIG PRETRAIN GPUS [--work-dir DIR] [--amp] ...
# e.g. tools/benchmarks/mmsegmentation/train.sh \
#   configs/benchmarks/mmsegmentation/ade20k/upernet_vit-s16_160k_ade20k-512x512.py dino_mmseg.pth 8
# Runs check_transfer.py first and stops if the backbone would not start from PRETRAIN.
exec "$(dirname "${BASH_SOURCE[0]}")/../launch_downstream.sh" mmseg "$@"
