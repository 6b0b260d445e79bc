# PASCAL VOC 2012 semantic segmentation (21 classes incl. background, 255 = boundary), as
# VOCtrainval_11-May-2012.tar unpacks: VOCdevkit/VOC2012/{JPEGImages, SegmentationClass (palette
# PNGs), ImageSets/Segmentation/{train,val}.txt}.
data_root = 'data/VOCdevkit/VOC2012/'
_voc_tar = ('mkdir -p {grandparent} && tar xf VOCtrainval_11-May-2012.tar -C {grandparent}   '
            '(PASCAL VOC 2012 trainval, host.robots.ox.ac.uk/pascal/VOC/voc2012)')
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
    # what makes each path (mmdense.evaluation.data_check)
    prepare={
        'JPEGImages': _voc_tar,
        'SegmentationClass': _voc_tar,
        'ImageSets/Segmentation': _voc_tar,
    },
)
