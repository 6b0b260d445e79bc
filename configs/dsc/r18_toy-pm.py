# Deprecated: the old name of ./r18_toy_pm.py (configs/README.md, naming scheme),
# removed in mmdense 0.2.0.
_base_ = './r18_toy_pm.py'
