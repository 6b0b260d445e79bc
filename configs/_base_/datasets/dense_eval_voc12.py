# PASCAL VOC 2012 semantic segmentation (21 classes incl. background, 255 = boundary).
data_root = 'data/VOCdevkit/VOC2012/'
dense_eval_data = dict(
    num_classes=21,
    ignore_index=255,
    img_size=320,
    train=dict(
        type='PascalVOCDataset',
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/train.txt'),
    val=dict(
        type='PascalVOCDataset',
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt'),
)
