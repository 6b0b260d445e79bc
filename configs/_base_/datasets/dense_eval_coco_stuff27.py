# COCO-Stuff-164k with the 171 mmseg classes merged into 27 coarse categories (12 thing and 15
# stuff supercategories). Convert the raw annotations first with mmseg's
# tools/dataset_converters/coco_stuff164k.py (writes *_labelTrainIds.png).
data_root = 'data/coco_stuff164k/'
dense_eval_data = dict(
    num_classes=27,
    ignore_index=255,
    img_size=320,
    label_lut='coco_stuff_171_to_27',
    train=dict(
        type='COCOStuffDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017'),
        instance_ann_file='annotations/instances_train2017.json'),
    val=dict(
        type='COCOStuffDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        instance_ann_file='annotations/instances_val2017.json'),
)
