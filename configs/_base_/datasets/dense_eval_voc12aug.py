# PASCAL VOC 2012 with the SBD-augmented training set ("trainaug", 10,582 images, Hariharan et
# al. 2011), the train split of Leopart's linear protocol. mmseg's
# tools/dataset_converters/voc_aug.py writes SegmentationClassAug/ and
# ImageSets/Segmentation/trainaug.txt; every listed image needs its mask there.
_base_ = ['./dense_eval_voc12.py']
dense_eval_data = dict(
    train=dict(
        data_prefix=dict(seg_map_path='SegmentationClassAug'),
        ann_file='ImageSets/Segmentation/trainaug.txt'))
