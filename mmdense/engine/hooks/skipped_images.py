import logging

from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdense.datasets.skip_corrupt import skip_wrappers
from mmdense.registry import HOOKS


@HOOKS.register_module()
class SkippedImagesHook(Hook):
    """Logs, after every training epoch (once at the end of an iteration-based run), how many
    images the :class:`SkipCorruptImages` wrappers of the training dataset skipped (also when
    they are nested, e.g. one per source of a ``ConcatDataset``), and records the total in the
    message hub as ``train/skipped_images``. It is one of the default hooks of
    ``configs/_base_/default_runtime.py`` and does nothing without a wrapper."""

    def after_train_epoch(self, runner) -> None:
        wrappers = skip_wrappers(runner.train_dataloader.dataset)
        if not wrappers:
            return
        count = sum(wrapper.pop_skipped_count() for wrapper in wrappers)
        runner.message_hub.update_info('train/skipped_images', count)
        print_log(f'skip_corrupt: {count} unreadable image(s) skipped in epoch {runner.epoch + 1}',
                  logger='current', level=logging.WARNING if count else logging.INFO)
