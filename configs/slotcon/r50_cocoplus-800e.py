# SlotCon ResNet-50 on COCO+ (train2017 and unlabeled2017: 118k + 123k images), 800 epochs,
# 8 GPUs x 64: the official scripts/slotcon_cocoplus_r50_800ep.sh, whose settings are those of the
# COCO recipe (256 prototypes, LARS lr 1.0 x 512/256, 5 warm-up epochs, fp16).
_base_ = ['./r50_coco-800e.py']

coco_folder = dict(type='UnlabeledImageDataset', data_root=_base_.data_root,
                   pipeline=_base_.train_pipeline)
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(**coco_folder, data_prefix='train2017/'),
            dict(**coco_folder, data_prefix='unlabeled2017/'),
        ]))
