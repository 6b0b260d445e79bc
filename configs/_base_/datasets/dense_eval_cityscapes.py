# Cityscapes (19 train classes). Create *_gtFine_labelTrainIds.png first with mmseg's
# tools/dataset_converters/cityscapes.py.
data_root = 'data/cityscapes/'
dense_eval_data = dict(
    num_classes=19,
    ignore_index=255,
    img_size=512,
    train=dict(
        type='CityscapesDataset',
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train')),
    val=dict(
        type='CityscapesDataset',
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val')),
)
