# Deprecated: the old name of ./vit-s_coco.py (configs/README.md, naming scheme),
# removed in mmdense 0.2.0.
_base_ = './vit-s_coco.py'
