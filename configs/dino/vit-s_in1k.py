# DINO ViT-S/16 on ImageNet-1K: the earlier name of ./vit-s_in1k-300e.py (the README's "boost"
# run), kept for the commands and configs that use it. It was a 100-epoch run with the boost
# run's τ_t warm-up and learned prototype norms; ./vit-s_in1k-100e.py is the vanilla 100-epoch run.
_base_ = ['./vit-s_in1k-300e.py']
