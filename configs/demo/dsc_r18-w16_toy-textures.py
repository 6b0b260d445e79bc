# `tools/demo.py --methods all`: DSC on the colour-free toy textures of the demo, on the backbone
# and crops of the SlotCon demo (configs/demo/slotcon_r18-w16_toy-textures.py): a ResNet-18 at
# quarter width cut after its third stage (stride 8), two 64 px views per image; losses, queue
# (512), neighbours and k-means as configs/dsc/r18_toy.py. Sized for a short CPU run: batch 16,
# 6 epochs of 600 images (222 iterations), SGD lr 0.06 on a cosine ending with the run, momentum
# encoder 0.99. With the toy config's MoCo rules (lr 0.03 x 32 / 256, momentum 0.999) and batch
# 32 the key encoder keeps 90 % of its random init over the 108 iterations; a random encoder maps
# every image to nearly one direction (mean cosine 0.94 between images), so the instance term sat
# at chance (ln 513) and kNN scored within the random draws (README, "Every method against
# random init").
_base_ = ['../dsc/r18_toy.py']

data_root = 'data/toy_textures/'
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(size=64)
train_dataloader = dict(batch_size=16,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
model = dict(
    backbone=dict(stem_channels=16, base_channels=16, num_stages=3, strides=(1, 2, 1),
                  dilations=(1, 1, 2), out_indices=(2, )),
    neck=dict(in_channels=64, hid_channels=512),
    teacher_momentum=0.99,
    end_teacher_momentum=0.99)

max_epochs = 6
optim_wrapper = dict(optimizer=dict(lr=0.06))
param_scheduler = _base_.param_scheduler
param_scheduler[0].update(T_max=max_epochs, end=max_epochs)
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
auto_scale_lr = dict(base_batch_size=16)
