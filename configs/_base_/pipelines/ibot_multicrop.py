# iBOT's views with the README's ViT-S/16 arguments (main_ibot.py DataAugmentationiBOT and
# loader.py ImageFolderMask): 2 global crops of 224 px, scale (0.25, 1) (--global_crops_scale
# 0.25 1), 10 local crops of 96 px, scale (0.05, 0.25) (--local_crops_number 10
# --local_crops_scale 0.05 0.25), DINO's photometric pipelines (blur always / blur 0.1 and
# solarise 0.2 / blur 0.5), bicubic antialiased resize, flip p 0.5; then a block-wise patch
# mask per global view, ratio 0 or U(0.1, 0.5) (--pred_ratio 0 0.3 --pred_ratio_var 0 0.2,
# --pred_shape block, aspect ratio (0.3, 1/0.3)).
_base_ = ['./dino_multicrop.py']

train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(scale=(0.25, 1.0))
train_pipeline[1].local_crops.update(num=10, scale=(0.05, 0.25))
train_pipeline.insert(2, dict(type='BlockwisePatchMasks', num_views=2, patch_size=16,
                              pred_ratio=(0.0, 0.3), pred_ratio_var=(0.0, 0.2),
                              pred_aspect_ratio=(0.3, 1 / 0.3)))
train_pipeline[3].algorithm_keys = ['crop_boxes', 'flips', 'masks']
