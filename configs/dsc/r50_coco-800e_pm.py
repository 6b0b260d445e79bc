# DSC-PM: as r50_coco-800e.py, with semantic classes from 128 learnable prototypes and
# Sinkhorn-balanced assignment instead of batch k-means.
_base_ = ['./r50_coco-800e.py']
model = dict(semantic_variant='pm')
