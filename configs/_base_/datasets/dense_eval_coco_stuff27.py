# COCO-Stuff-164k with the 171 mmseg classes merged into 27 coarse categories (12 thing and 15
# stuff supercategories), laid out as mmseg's docs unpack the archives: images/{train,val}2017 from
# COCO's train2017.zip / val2017.zip, annotations/{train,val}2017 from
# stuffthingmaps_trainval2017.zip, where mmseg's dataset_converters/coco_stuff164k.py writes the
# *_labelTrainIds.png (171 classes) read here.
_stuff = ('mkdir -p {data_root} && unzip stuffthingmaps_trainval2017.zip -d '
          '{data_root}/annotations   (COCO-Stuff, github.com/nightrome/cocostuff), then python '
          '{mmseg_tools}/dataset_converters/coco_stuff164k.py {data_root} --nproc 8   '
          '(writes the *_labelTrainIds.png)')
_instances = ('mkdir -p {data_root} && unzip annotations_trainval2017.zip -d {data_root}   '
              '(COCO 2017 annotations; only the dispersion protocol reads them)')
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
    prepare={
        'images/train2017': 'mkdir -p {data_root} && unzip train2017.zip -d {data_root}/images   '
        '(cocodataset.org)',
        'images/val2017': 'mkdir -p {data_root} && unzip val2017.zip -d {data_root}/images   '
        '(cocodataset.org)',
        'annotations/train2017': _stuff,
        'annotations/val2017': _stuff,
        'annotations/instances_train2017.json': _instances,
        'annotations/instances_val2017.json': _instances,
        'curated': "cp -r PiCIE/curated {data_root}/   (the curated/ folder of PiCIE's "
        'repository, github.com/janghyuncho/PiCIE)',
    },
)
