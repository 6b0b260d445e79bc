"""The demo's scores: what a pretrained model learnt against random inits of the same model, on
the toy textures, through :mod:`mmdense.evaluation` (the protocols, the prototype scores, the
grid ceiling and the draws of :mod:`mmdense.evaluation.against_random`)."""
from mmdense.evaluation import grid_majority_scores, load_dataset_config, load_split, run_protocol
from mmdense.evaluation.against_random import margins, score_models
from mmdense.evaluation.prototypes import prototype_assignment, prototype_scores

SCORES = ('knn', 'linear', 'cluster', 'prototypes', 'prototypes_majority')
SCORE_NAMES = dict(prototypes='prototypes, one-to-one (Hungarian)',
                   prototypes_majority='prototypes, many-to-one (majority)',
                   cluster='k-means K=9, Hungarian', linear='linear probe', knn='kNN (k=10)')
# the colour-free toy textures (tools/misc/make_toy_scenes.py --img-size 96 --random-hues
# --texture-period 4 8 --object-radius 0.12 0.35): every object a random hue, the classes differ
# by shape and texture only; objects of circumradius 0.12-0.35 of the image (the default set's
# 0.06-0.30 leaves 84 % of the labelled pixels to the background, and objects of 6 px radius
# under one 8 px feature cell), 29 % of the labelled pixels
TEXTURE_DATA = dict(img_size=96, class_hues=False, texture_period=(4.0, 8.0),
                    object_radius=(0.12, 0.35))


def texture_data_cfg(data_root):
    """The dense-evaluation dataset config of the toy set at ``data_root`` (96 px)."""
    data_cfg = load_dataset_config('toy', data_root)
    data_cfg['img_size'] = TEXTURE_DATA['img_size']
    return data_cfg


def load_probe_splits(data_root, num_train, num_val):
    """``(data_cfg, train, val)``: the first ``num_train`` train and ``num_val`` val images."""
    data_cfg = texture_data_cfg(data_root)
    return (data_cfg, load_split(data_cfg, 'train', num_train),
            load_split(data_cfg, 'val', num_val))


def score_model(model, train, val, data_cfg, which=SCORES):
    """mIoU of each score named in ``which`` (of :data:`SCORES`) for one model, and the ceiling
    the feature grid sets (``grid_ceiling``: the majority label of every cell of the model's
    score map, :func:`mmdense.evaluation.grid_majority_scores`)."""
    common = dict(num_classes=data_cfg['num_classes'], ignore_index=data_cfg['ignore_index'])
    scores = {}
    if {'prototypes', 'prototypes_majority'} & set(which):
        matched = prototype_scores(model, train, val, channel_order='rgb', **common)
        scores.update(prototypes=matched['hungarian']['mIoU'],
                      prototypes_majority=matched['majority']['mIoU'])
    for score in which:
        if score not in scores:
            scores[score] = run_protocol(model, score, train, val, batch_size=16,
                                         **common)['mIoU']
    scores = {score: scores[score] for score in which}
    grid = prototype_assignment(model, val['images'][:1], channel_order='rgb').shape[-2:]
    scores['grid_ceiling'] = grid_majority_scores(val['labels'], grid, **common)['mIoU']
    return scores


def evaluate_models(config, models, data_root, num_train, num_val, device='cpu',
                    which=SCORES, progress=None):
    """``{name: scores}`` for ``models = [(name, checkpoint or 'random', seed), ...]``, all on
    the same ``num_train`` / ``num_val`` images (:func:`mmdense.evaluation.against_random.
    score_models`: the seed picks a random init's draw). ``progress(done, total)`` is called
    after each model."""
    data_cfg, train, val = load_probe_splits(data_root, num_train, num_val)
    return score_models(config, models,
                        lambda model: score_model(model, train, val, data_cfg, which), device,
                        progress)


def summarise(results):
    """Per score of :data:`SCORES` that was run: the pretrained value, every random draw, their
    mean / std / max and the margins (:func:`mmdense.evaluation.against_random.margins`)."""
    return margins(results, [s for s in SCORES if s in results['pretrained']])
