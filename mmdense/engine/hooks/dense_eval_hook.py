"""Periodic frozen-feature dense evaluation during pretraining."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdense.evaluation import check_protocol, load_dataset_config, load_split, run_protocol
from mmdense.registry import HOOKS


@HOOKS.register_module()
class DenseEvalHook(Hook):
    """Run a dense protocol on a small labelled subset every ``interval`` iterations.

    The subset (``num_train`` / ``num_val`` images of the dense-eval dataset ``dataset``, a
    ``dense_eval_data`` dict or a dataset name/config path, see :mod:`mmdense.evaluation.data`)
    is loaded once before training. Metrics go to the visualizer backends as
    ``dense_eval/<protocol>_<metric>`` at step ``iter + 1`` (TensorBoard, ``scalars.json``) and
    to the message hub as ``train/dense_eval/<protocol>_<metric>`` so that LoggerHook prints
    them (and adds them to its record) when it logs that iteration. The message-hub entries are
    dropped before the next iteration, so no stale value is logged at later steps.

    Args:
        dataset: dense-eval dataset config dict, name (``'toy'``) or config file path.
        protocol: ``'linear'``, ``'cluster'``, ``'knn'`` or ``'dispersion'``.
        interval: evaluate every ``interval`` training iterations (and after the last one).
        num_train / num_val: images taken from the start of each split.
        img_size: overrides the dataset's evaluation size.
        data_root: overrides the dataset's root.
        protocol_cfg: extra keyword arguments of :func:`mmdense.evaluation.run_protocol`.
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
                 protocol_cfg: Optional[dict] = None) -> None:
        if interval < 1:
            raise ValueError(f'DenseEvalHook interval must be >= 1, got {interval}')
        self.protocol = check_protocol(protocol)
        self.dataset = dataset
        self.interval = interval
        self.num_train, self.num_val = num_train, num_val
        self.img_size = img_size
        self.data_root = data_root
        self.protocol_cfg = protocol_cfg or {}
        self.data_cfg = None
        self.splits = None

    def before_train(self, runner) -> None:
        if isinstance(self.dataset, str):
            data_cfg = load_dataset_config(self.dataset, self.data_root)
        else:
            data_cfg = dict(self.dataset)
            if self.data_root is not None:
                for split in ('train', 'val'):
                    data_cfg[split] = dict(data_cfg[split], data_root=self.data_root)
        if self.img_size is not None:
            data_cfg['img_size'] = self.img_size
        self.data_cfg = data_cfg
        needs_train = self.protocol in ('linear', 'knn')
        self.splits = dict(
            train=load_split(data_cfg, 'train', self.num_train) if needs_train else None,
            val=load_split(data_cfg, 'val', self.num_val))
        runner.logger.info(f'DenseEvalHook: {self.protocol} every {self.interval} iterations on '
                           f"{self.num_val} val images ({data_cfg['num_classes']} classes)")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        for key in [k for k in runner.message_hub.log_scalars if k.startswith(self._hub_prefix)]:
            runner.message_hub.log_scalars.pop(key)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            self.evaluate(runner)

    def evaluate(self, runner) -> dict:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        metrics = run_protocol(model, self.protocol, self.splits['train'], self.splits['val'],
                               num_classes=self.data_cfg['num_classes'],
                               ignore_index=self.data_cfg.get('ignore_index', 255),
                               **self.protocol_cfg)
        scalars = {f'dense_eval/{self.protocol}_{name}': value for name, value in metrics.items()}
        for key, value in scalars.items():
            runner.message_hub.update_scalar(self._hub_prefix + key.partition('/')[2], value)
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        runner.logger.info('dense eval (iter %d): %s', runner.iter + 1,
                           ', '.join(f'{k}={v:.4f}' for k, v in scalars.items()))
        return metrics
