# Dense evaluation on the toy scenes: 9 labels (background + 8 shapes), instance ids from the
# COCO instances json (intra-instance dispersion). Read through mmseg's BaseSegDataset.
data_root = 'data/toy_scenes/'
dense_eval_data = dict(
    num_classes=9,
    ignore_index=255,
    img_size=224,
    train=dict(
        type='BaseSegDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/train', seg_map_path='semantic/train'),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        instance_ann_file='annotations/instances_train.json'),
    val=dict(
        type='BaseSegDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/val', seg_map_path='semantic/val'),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        instance_ann_file='annotations/instances_val.json'),
    prepare={'': 'python tools/misc/make_toy_scenes.py --out {data_root}'},
)
