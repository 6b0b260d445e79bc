"""Run a named protocol (:mod:`.presets`) on on-disk feature stores, and write its report.

``evaluate_preset`` extracts each split once into a temporary :class:`.feature_store.FeatureStore`
(removed afterwards), runs every protocol of the preset on it and returns a record holding the
preset, the image counts, the feature grid and the metrics; ``write_report`` stores the record
as JSON and Markdown with the checkpoint's SHA-256. It runs the same on CPU, one GPU and under
``torchrun`` (each rank extracts its share of the images; the metrics are reduced across ranks
and are identical on all of them).
"""
import datetime
import json
import os.path as osp
import shutil
import tempfile
import time
from typing import Dict, Optional, Union

from torch import nn

from mmdense.fileio import sha256sum, write_atomically
from mmdense.utils.dist import get_rank, get_world_size
from mmdense.utils.errors import UserValueError
from .data import DenseEvalDataset
from .data_check import check_data
from .presets import DensePreset, describe_setting, format_preset, get_preset, preset_data_cfg
from .feature_store import FeatureStore, build_loader, extract_to_store
from .protocols import evaluate_protocol


class SubsetError(UserValueError):
    """A run would use fewer images than its preset (or more than it names); a user error (one
    line on the command line)."""


def split_counts(preset: DensePreset, num_train: Optional[int] = None,
                 num_val: Optional[int] = None) -> Dict[str, Optional[int]]:
    """The splits a run of ``preset`` reads, each with its image count (None: all)."""
    return dict(train=num_train, val=num_val) if preset.needs_train else dict(val=num_val)


def _split_datasets(data_cfg: dict,
                    counts: Dict[str, Optional[int]]) -> Dict[str, DenseEvalDataset]:
    """The datasets of a run, after one check of all its files (:func:`.data_check.check_data`:
    an incomplete root raises one error naming everything missing and the commands that make
    it, before any feature is extracted)."""
    check = check_data(data_cfg, counts)
    if not check.complete:
        raise check.error()
    return {split: DenseEvalDataset(data_cfg, split, count) for split, count in counts.items()}


def check_counts(preset: DensePreset, datasets: Dict[str, DenseEvalDataset],
                 allow_subset: bool = False, log=print) -> bool:
    """Whether the run is a subset of ``preset``; raises :class:`SubsetError` for a subset
    unless ``allow_subset`` (then it warns loudly), and for more images than the preset names.

    A split is a subset when it holds fewer images than the preset's count, or than the whole
    split on disk for a preset without counts.
    """
    short = []
    for split, dataset in datasets.items():
        expected = getattr(preset, f'num_{split}') or dataset.num_available
        if len(dataset) > expected:
            raise SubsetError(f'preset {preset.name}: the {split} split has {len(dataset):,} '
                              f'images, the preset names {expected:,}; check the data root and '
                              'the image lists')
        if len(dataset) < expected:
            short.append(f'{split} uses {len(dataset):,} images, the preset {expected:,}')
    if not short:
        return False
    message = (f"preset {preset.name}: {'; '.join(short)}: the numbers are not comparable with "
               'the published ones')
    if not allow_subset:
        raise SubsetError(message + ' (pass allow_subset / --allow-subset to run a subset '
                          'anyway)')
    banner = '!' * 78
    log(f'{banner}\nWARNING: {message}\n{banner}')
    return True


def _extract(model: nn.Module, dataset: DenseEvalDataset, folder: str, preset: DensePreset,
             batch_size: int, num_workers: int, feature_dtype: str,
             progress: bool) -> FeatureStore:
    device = next(model.parameters()).device
    loader = build_loader(dataset, batch_size, num_workers, pin_memory=device.type == 'cuda')
    store = FeatureStore(folder, feature_dtype)
    extract_to_store(model, loader, store, channel_order='rgb',  # DenseEvalDataset: RGB
                     grid=preset.grid, progress=progress)
    return store


def evaluate_preset(model: nn.Module, preset: Union[str, DensePreset],
                    data_root: Optional[str] = None, train_list: Optional[str] = None,
                    val_list: Optional[str] = None, num_train: Optional[int] = None,
                    num_val: Optional[int] = None, allow_subset: bool = False,
                    batch_size: int = 16, num_workers: int = 4, feature_dtype: str = 'float16',
                    cache_dir: Optional[str] = None, chunk_images: int = 16,
                    progress: bool = True, log=print) -> dict:
    """Every protocol of ``preset`` for ``model``'s frozen dense features, streamed.

    Args:
        model: an mmdense model or a backbone, on the device to run on (eval mode is set
            around each forward).
        preset: a preset name (:data:`.presets.PRESETS`) or a :class:`.presets.DensePreset`.
        data_root: overrides the dataset config's root.
        train_list, val_list: image-list files replacing the preset's paths.
        num_train, num_val: the first images of each split only: a subset (see
            :func:`check_counts`).
        allow_subset: run a subset (marked ``subset: true``) instead of refusing it.
        batch_size, num_workers: the extraction ``DataLoader``'s.
        feature_dtype: ``'float16'`` (half the disk) or ``'float32'`` (exact) stored features.
        cache_dir: where the feature stores go (default: the system temporary directory);
            each rank needs ``N/W · h·w·C`` values of disk per split.
        chunk_images: images read back at a time by the protocols.
        progress: progress bars and per-protocol lines on rank 0.

    Returns:
        ``dict(preset, subset, num_train, num_val, feature_grid, feature_dtype, world_size,
        device, results=[dict(protocol, setting, options, metrics, seconds)])``.

    Raises:
        .data_check.DataRootError: before any feature is extracted, when a file, folder or
            list the run reads is missing (one message: each, and the command that makes it).
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    data_cfg = preset_data_cfg(preset, data_root, train_list, val_list)
    datasets = _split_datasets(data_cfg, split_counts(preset, num_train, num_val))
    show = log if get_rank() == 0 else (lambda *_: None)
    show(format_preset(preset))
    subset = check_counts(preset, datasets, allow_subset, show)
    device = next(model.parameters()).device
    folder = tempfile.mkdtemp(prefix='mmdense_dense_eval_', dir=cache_dir)
    try:
        stores = {
            split: _extract(model, dataset, osp.join(folder, split), preset, batch_size,
                            num_workers, feature_dtype, progress)
            for split, dataset in datasets.items()
        }
        feature_grid = list(stores['val'].feat_shape[-2:])
        results = []
        for protocol, options in preset.protocols:
            start = time.time()
            extra = dict(progress=progress) if protocol == 'linear' else {}
            metrics = evaluate_protocol(
                protocol, stores.get('train'), stores['val'], data_cfg['num_classes'],
                data_cfg.get('ignore_index', 255), device, chunk_images=chunk_images,
                **extra, **options)
            results.append(dict(protocol=protocol, setting=describe_setting(protocol, options),
                                options=dict(options), metrics=metrics,
                                seconds=round(time.time() - start, 2)))
            show(f'{protocol} {results[-1]["setting"]}: ' +
                 ', '.join(f'{name}={value:.4f}' for name, value in metrics.items()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return dict(preset=preset.record(), subset=subset,
                num_train=len(datasets['train']) if 'train' in datasets else 0,
                num_val=len(datasets['val']), feature_grid=feature_grid,
                feature_dtype=feature_dtype, world_size=get_world_size(), device=str(device),
                results=results)


def checkpoint_sha256(path: str) -> Optional[str]:
    """SHA-256 of a checkpoint file (None for ``'random'``)."""
    return None if path == 'random' else sha256sum(path)


def format_markdown(record: dict) -> str:
    """A Markdown report of a :func:`evaluate_preset` record (with ``checkpoint`` fields)."""
    preset = record['preset']
    names = sorted({n for r in record['results'] for n in r['metrics']},
                   key=lambda n: (n not in ('mIoU', 'pAcc'), n))
    lines = [
        f"# Dense evaluation: preset `{preset['name']}`", '',
        f"- checkpoint: `{record.get('checkpoint')}` (sha256 `{record.get('checkpoint_sha256')}`)",
        f"- config: `{record.get('config')}`",
        f"- images: train {record['num_train']:,}, val {record['num_val']:,}" +
        (' **(SUBSET of the preset: not comparable with published numbers)**'
         if record['subset'] else ''),
        f"- {preset['img_size']} px ({preset['crop']}), feature grid "
        f"{record['feature_grid'][0]}x{record['feature_grid'][1]} ("
        f"{'native stride' if preset['feature_stride'] is None else 'resampled to stride '}"
        f"{preset['feature_stride'] or ''}), scored at "
        f"{preset['label_size'] or preset['img_size']} px, features stored as "
        f"{record['feature_dtype']}, {record['world_size']} process(es) on {record['device']}",
        f"- source: {preset['source']}",
        '- departures from the reference protocol: ' + ('; '.join(
            f"{point['setting']}: {point['value']} (reference: {point['reference']}; "
            f"{point['departure']})" for point in preset['points'] if point['departure'])
            or 'none'), '',
        '| protocol | setting | ' + ' | '.join(names) + ' | seconds |',
        '|---|---|' + '---|' * (len(names) + 1),
    ]
    for r in record['results']:
        values = [f"{r['metrics'][n]:.4f}" if n in r['metrics'] else '-' for n in names]
        lines.append(f"| {r['protocol']} | {r['setting']} | " + ' | '.join(values) +
                     f" | {r['seconds']} |")
    return '\n'.join(lines) + '\n'


def write_report(record: dict, json_path: str, checkpoint: Optional[str] = None,
                 config: Optional[str] = None) -> Dict[str, str]:
    """Write ``record`` (with the checkpoint path, its SHA-256, the config and the time) to
    ``json_path`` and the Markdown report next to it (``.md``), each replaced atomically.
    Returns the two paths."""
    record = dict(record, checkpoint=checkpoint, config=config,
                  checkpoint_sha256=checkpoint and checkpoint_sha256(checkpoint),
                  created=datetime.datetime.now(datetime.timezone.utc).isoformat(
                      timespec='seconds'))
    markdown_path = osp.splitext(json_path)[0] + '.md'
    write_atomically(json.dumps(record, indent=2).encode(), json_path)
    write_atomically(format_markdown(record).encode(), markdown_path)
    return dict(json=json_path, markdown=markdown_path)


__all__ = ['SubsetError', 'check_counts', 'checkpoint_sha256', 'evaluate_preset',
           'format_markdown', 'split_counts', 'write_report']
