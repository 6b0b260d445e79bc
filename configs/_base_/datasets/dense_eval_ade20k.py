# ADE20K (SceneParsing, 150 classes; label 0 "other" is ignored via reduce_zero_label), as
# ADEChallengeData2016.zip unpacks: ADEChallengeData2016/{images,annotations}/{training,validation}.
data_root = 'data/ade/ADEChallengeData2016/'
dense_eval_data = dict(
    num_classes=150,
    ignore_index=255,
    img_size=320,
    train=dict(
        type='ADE20KDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')),
    val=dict(
        type='ADE20KDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation')),
    prepare={'': 'mkdir -p {parent} && unzip ADEChallengeData2016.zip -d {parent}   '
             '(MIT SceneParsing, data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip)'},
)
