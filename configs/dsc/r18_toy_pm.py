# DSC-PM on the toy scenes: as r18_toy.py, with 16 learnable prototypes and Sinkhorn-balanced
# assignment instead of batch k-means.
_base_ = ['./r18_toy.py']
model = dict(semantic_variant='pm')
