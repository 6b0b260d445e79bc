# Deprecated: the old name of ./vit-ti_toy-30e.py (configs/README.md, naming scheme),
# removed in mmdense 0.2.0.
_base_ = './vit-ti_toy-30e.py'
