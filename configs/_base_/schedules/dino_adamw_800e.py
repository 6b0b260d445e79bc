# DINO recipe of ./dino_adamw_300e.py (τ_t warm-up 0.04 -> 0.07) for 800 epochs (the same 10
# warm-up epochs, then cosine; weight decay cosine over the 800), the COCO length dense methods
# compare at (SlotCon, DenseCL).
_base_ = ['./dino_adamw_300e.py']

max_epochs = 800
warmup_epochs = _base_.warmup_epochs
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-6, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.4, T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
