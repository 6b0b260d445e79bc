# Cityscapes (19 train classes), as leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip
# unpack (leftImg8bit/<split>/<city>/*_leftImg8bit.png, gtFine/<split>/<city>/*_gtFine_*), plus
# the *_gtFine_labelTrainIds.png that mmseg's dataset_converters/cityscapes.py writes beside the
# *_gtFine_polygons.json (it needs cityscapesscripts).
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
    prepare={
        'leftImg8bit': 'mkdir -p {data_root} && unzip leftImg8bit_trainvaltest.zip -d '
        '{data_root}   (cityscapes-dataset.com)',
        'gtFine': 'mkdir -p {data_root} && unzip gtFine_trainvaltest.zip -d {data_root}   '
        '(cityscapes-dataset.com), then '
        'pip install cityscapesscripts && python {mmseg_tools}/dataset_converters/cityscapes.py '
        '{data_root} --nproc 8   (writes the *_gtFine_labelTrainIds.png)',
    },
)
