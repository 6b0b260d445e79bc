# Deprecated: the old name of ./r50_coco-800e_pm.py (configs/README.md, naming scheme),
# removed in mmdense 0.2.0.
_base_ = './r50_coco-800e_pm.py'
