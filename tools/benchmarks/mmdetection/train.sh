#!/usr/bin/env bash
# Fine-tune an mmdet benchmark config from an exported backbone (export.py --target mmdet):
#   tools/benchmarks/mmdetection/train.sh CONFIG PRETRAIN GPUS [--work-dir DIR] [--amp] ...
# e.g. tools/benchmarks/mmdetection/train.sh \
#   configs/benchmarks/mmdetection/coco/mask-rcnn_vit-s16_fpn_1x_coco.py dino_mmdet.pth 8
# Runs check_transfer.py first and stops if the backbone would not start from PRETRAIN.
exec "$(dirname "${BASH_SOURCE[0]}")/../launch_downstream.sh" mmdet "$@"
