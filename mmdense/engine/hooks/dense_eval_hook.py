"""Periodic frozen-feature dense evaluation during pretraining, streamed."""
import shutil
import tempfile
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdense.evaluation import DenseEvalDataset, build_protocol, load_dataset_config
from mmdense.evaluation.feature_store import FeatureStore, build_loader, extract_to_store
from mmdense.evaluation.presets import get_preset, preset_data_cfg
from mmdense.registry import HOOKS


@HOOKS.register_module()
class DenseEvalHook(Hook):
    """Run a dense protocol on a labelled subset every ``interval`` iterations, streamed.

    The subset is the first ``num_train`` / ``num_val`` images of each split of either a preset
    (``preset``: its dataset, resolution, crop, scoring size, feature grid, image lists and the
    options of its first ``protocol`` setting; see :mod:`mmdense.evaluation.presets`) or a
    dense-eval dataset (``dataset``: a ``dense_eval_data`` dict, or a dataset name/config path,
    see :mod:`mmdense.evaluation.data`). Only the file lists are held between evaluations; each
    evaluation reads the images through a ``DataLoader``, stores their features on disk
    (:class:`mmdense.evaluation.FeatureStore`, removed afterwards) and runs the protocol's class
    (:mod:`mmdense.evaluation.protocols`, the engine of the presets and ``test_dense.py``), so
    memory is bounded by the chunk sizes and time by the subset size. Under distributed
    training every rank extracts its share of the images and gets the same metrics.

    Metrics go to the visualizer backends as ``dense_eval/<protocol>_<metric>`` at step
    ``iter + 1`` (TensorBoard, ``scalars.json``) and to the message hub as
    ``train/dense_eval/<protocol>_<metric>`` so that LoggerHook prints them (and adds them to
    its record) when it logs that iteration. The message-hub entries are dropped before the
    next iteration, so no stale value is logged at later steps.

    Args:
        dataset: dense-eval dataset config dict, name (``'toy'``) or config file path (ignored
            when ``preset`` is given).
        protocol: ``'linear'``, ``'cluster'``, ``'knn'`` or ``'dispersion'``.
        interval: evaluate every ``interval`` training iterations (and after the last one).
        num_train / num_val: images taken from the start of each split.
        img_size: overrides the evaluation size.
        data_root: overrides the dataset's root.
        protocol_cfg: options of the protocol class (e.g. ``epochs`` for linear, ``k`` for
            knn, ``num_clusters`` / ``matching`` for cluster, see
            :data:`mmdense.evaluation.PROTOCOLS`), over the preset's; checked when the hook
            is built.
        preset: a preset name, e.g. ``'coco_stuff27'`` (a subset of it: the metrics are not
            the preset's published numbers).
        batch_size / num_workers: of the extraction ``DataLoader``.
        cache_dir: where the feature stores go (default: the system temporary directory).
    """
    priority = 'NORMAL'  # before LoggerHook, so an evaluation on a logging iteration is printed
    _hub_prefix = 'train/dense_eval/'

    def __init__(self,
                 dataset='toy',
                 protocol: str = 'knn',
                 interval: int = 1000,
                 num_train: int = 32,
                 num_val: int = 16,
                 img_size: Optional[int] = None,
                 data_root: Optional[str] = None,
                 protocol_cfg: Optional[dict] = None,
                 preset: Optional[str] = None,
                 batch_size: int = 8,
                 num_workers: int = 0,
                 cache_dir: Optional[str] = None) -> None:
        if interval < 1:
            raise ValueError(f'DenseEvalHook interval must be >= 1, got {interval}')
        self.protocol = protocol
        self.preset = get_preset(preset) if preset else None
        self.dataset = dataset
        self.interval = interval
        self.num_train, self.num_val = num_train, num_val
        self.img_size = img_size
        self.data_root = data_root
        self.protocol_cfg = dict(self._preset_options(), **(protocol_cfg or {}))
        self.evaluator = build_protocol(protocol, **self.protocol_cfg)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.cache_dir = cache_dir
        self.data_cfg = None
        self.datasets = None

    def _preset_options(self) -> dict:
        if self.preset is None:
            return {}
        for protocol, options in self.preset.protocols:
            if protocol == self.protocol:
                return dict(options)
        raise ValueError(f'preset {self.preset.name} has no {self.protocol!r} protocol; it has '
                         f'{[protocol for protocol, _ in self.preset.protocols]}')

    def _data_cfg(self) -> dict:
        if self.preset is not None:
            data_cfg = preset_data_cfg(self.preset, self.data_root)
        elif isinstance(self.dataset, str):
            data_cfg = load_dataset_config(self.dataset, self.data_root)
        else:
            data_cfg = dict(self.dataset)
            if self.data_root is not None:
                for split in ('train', 'val'):
                    data_cfg[split] = dict(data_cfg[split], data_root=self.data_root)
        if self.img_size is not None:
            data_cfg['img_size'] = self.img_size
        for split in ('train', 'val'):  # instance maps serve dispersion only: not read otherwise
            if split == 'train' or self.protocol != 'dispersion':
                data_cfg[split] = dict(data_cfg[split])
                data_cfg[split].pop('instance_ann_file', None)
        return data_cfg

    def before_train(self, runner) -> None:
        self.data_cfg = self._data_cfg()
        self.datasets = dict(val=DenseEvalDataset(self.data_cfg, 'val', self.num_val))
        if self.evaluator.needs_train:
            self.datasets['train'] = DenseEvalDataset(self.data_cfg, 'train', self.num_train)
        source = f'preset {self.preset.name} (subset)' if self.preset else 'dataset'
        runner.logger.info(
            f'DenseEvalHook: {self.protocol} every {self.interval} iterations on '
            f"{len(self.datasets['val'])} val images of the {source} "
            f"({self.data_cfg['num_classes']} classes)")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        for key in [k for k in runner.message_hub.log_scalars if k.startswith(self._hub_prefix)]:
            runner.message_hub.log_scalars.pop(key)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            self.evaluate(runner)

    def _grid(self):
        if self.preset is None or self.preset.feature_stride is None:  # native stride
            return None
        side = self.data_cfg['img_size'] // self.preset.feature_stride
        return side, side

    def evaluate(self, runner) -> dict:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        device = next(model.parameters()).device
        folder = tempfile.mkdtemp(prefix='mmdense_dense_eval_hook_', dir=self.cache_dir)
        try:
            stores = {}
            for split, dataset in self.datasets.items():
                loader = build_loader(dataset, self.batch_size, self.num_workers,
                                      pin_memory=device.type == 'cuda')
                stores[split] = FeatureStore(f'{folder}/{split}')
                extract_to_store(model, loader, stores[split], channel_order='rgb',  # its items
                                 grid=self._grid())
            metrics = self.evaluator(stores.get('train'), stores['val'],
                                     self.data_cfg['num_classes'],
                                     self.data_cfg.get('ignore_index', 255), device)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        scalars = {f'dense_eval/{self.protocol}_{name}': value for name, value in metrics.items()}
        for key, value in scalars.items():
            runner.message_hub.update_scalar(self._hub_prefix + key.partition('/')[2], value)
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        runner.logger.info('dense eval (iter %d): %s', runner.iter + 1,
                           ', '.join(f'{k}={v:.4f}' for k, v in scalars.items()))
        return metrics
