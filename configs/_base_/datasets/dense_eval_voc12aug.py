# PASCAL VOC 2012 with the SBD-augmented training set ("trainaug", 10,582 images, Hariharan et
# al. 2011), the train split of Leopart's linear protocol, read the way mmseg's converter leaves
# it and mmseg's own pascal_voc12_aug.py reads it: mmseg's voc_aug.py writes SBD's masks
# (benchmark.tgz, dataset/cls/*.mat) to SegmentationClassAug/ and the SBD ids that are in neither
# VOC train nor val to ImageSets/Segmentation/aug.txt (9,118). Trainaug is VOC train (1,464,
# masks in SegmentationClass/) followed by aug.txt (masks in SegmentationClassAug/). The
# trainaug.txt it also writes lists VOC-train ids without an SegmentationClassAug mask, so it
# is not read.
_base_ = ['./dense_eval_voc12.py']
_voc_aug = ('tar xzf benchmark.tgz -C {grandparent}   (SBD, www2.eecs.berkeley.edu/Research/'
            'Projects/CS/vision/grouping/semantic_contours/benchmark.tgz), then python '
            '{mmseg_tools}/dataset_converters/voc_aug.py {parent} {grandparent}/benchmark_RELEASE '
            '--nproc 8')
dense_eval_data = dict(
    train=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            {{_base_.dense_eval_data.train}},
            dict(
                type='PascalVOCDataset',
                data_root={{_base_.data_root}},
                data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
                ann_file='ImageSets/Segmentation/aug.txt'),
        ]),
    prepare={
        'SegmentationClassAug': _voc_aug,
        'ImageSets/Segmentation/aug.txt': _voc_aug,
    },
)
