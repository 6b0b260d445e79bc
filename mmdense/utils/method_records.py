"""One record per method: the Collection ``Metadata`` of ``configs/<method>/metafile.yml``.

A record is the OpenMMLab metafile that ``model-index.yml`` imports, extended with what the
derived tables need (the format: ``docs/adding_a_method.md``). The test table
(``tests/algorithm_table.py``), ``gpu_check.py``'s recipes and tiny dry run, the step-cost
entries of ``benchmark_table.py``, the per-method reliability cases, the ``Import`` list of
``model-index.yml`` and the README's Configs table are all read from here.

This module reads files only; it imports no model code (``mmdense.utils`` is the bottom layer),
so the registered algorithm is named, not checked, here (``tests/test_models/
test_algorithm_table.py`` checks the names against the registry).
"""
import copy
import glob
import os.path as osp
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import yaml

from .errors import UserValueError

BACKBONE_FAMILIES = ('vit', 'resnet')
METAFILE = 'metafile.yml'
PLACEHOLDER = re.compile(r'^\{(\w+)\}$')


class RecordError(UserValueError):
    """A method record that is missing a key or holds a value of the wrong kind."""


@dataclass(frozen=True)
class StepCost:
    """The method's row of ``tools/analysis_tools/benchmark_table.py``."""
    config: str  # under configs/benchmarks/step_cost/
    group: str  # methods compared at equal backbone, views and batch, e.g. 'ViT-S/16'
    baselines: Tuple[str, ...]  # step-cost names: record folders or mmpretrain baselines
    target: Optional[float]  # at most this many times each baseline's time per image
    pairs: bool  # its config reads a ring neighbour file
    recipe_views: Tuple[str, ...]  # benchmark.py --views under --recipe-crops
    recipe_batch: int  # images (pairs) per step under --recipe-crops


@dataclass(frozen=True)
class Mismatch:
    """A config edit (cfg-options) and the error it must raise when the model is built."""
    edit: Dict[str, Any]
    error: str  # a regular expression


@dataclass(frozen=True)
class ReadmeRow:
    """A row of the README's Configs table."""
    configs: Tuple[str, ...]
    method: str
    backbone: str
    data: str
    recipe: str


@dataclass(frozen=True)
class MethodRecord:
    """Everything the derived tables know about one method (see the module docstring)."""
    name: str  # the algorithm's name in mmdense's MODELS registry (the Collection's Name)
    folder: str  # its config folder under configs/, e.g. 'dino'
    path: str  # the record file, relative to the repository root
    backbone_family: str  # 'vit' or 'resnet'
    toy_config: str
    recipe_config: str
    tiny: Dict[str, Any]  # cfg-options that shrink the toy config to the tiny model
    step_cost: Optional[StepCost]
    mistyped: Dict[str, str]  # config part ('model', 'backbone', ...) -> class in the error
    mismatched: Dict[str, Mismatch]
    loss_terms: Dict[str, str]  # loss term -> model attribute that computes it
    variants: Dict[str, Dict[str, Any]]  # variant name -> model cfg-options
    readme_rows: Tuple[ReadmeRow, ...]

    def tiny_options(self, runtime: Mapping[str, Callable[[], Any]]) -> Dict[str, Any]:
        """The ``Tiny`` cfg-options with each ``'{name}'`` string replaced by
        ``runtime[name]()`` (called only for the names the record uses)."""
        return resolve_placeholders(self.tiny, runtime, f'{self.path}: Tiny')


def resolve_placeholders(value, runtime: Mapping[str, Callable[[], Any]], where: str):
    """A deep copy of ``value`` with every ``'{name}'`` string replaced by ``runtime[name]()``."""
    if isinstance(value, dict):
        return {k: resolve_placeholders(v, runtime, f'{where}.{k}') for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_placeholders(v, runtime, f'{where}[{i}]') for i, v in enumerate(value)]
    match = PLACEHOLDER.match(value) if isinstance(value, str) else None
    if match is None:
        return copy.deepcopy(value)
    if match.group(1) not in runtime:
        raise RecordError(f'{where}: unknown run-time value {value!r}; known: '
                          f'{sorted(runtime)}')
    return runtime[match.group(1)]()


def apply_options(cfg, options: Mapping[str, Any]) -> None:
    """Merge cfg-options into an mmengine ``Config`` in place, as ``--cfg-options`` does
    (dotted keys, list indices as numbers, ``_delete_: true`` to replace a dict)."""
    cfg.merge_from_dict(copy.deepcopy(dict(options)))


# ------------------------------------------------------------------------------------ reading
class _Fields:
    """Typed access to one mapping of a record, naming the file and key of a bad value."""

    def __init__(self, data, where: str):
        if not isinstance(data, dict):
            raise RecordError(f'{where}: expected a mapping, got {type(data).__name__}')
        self.data, self.where = data, where

    def get(self, key: str, kind, default=Ellipsis):
        if key not in self.data:
            if default is Ellipsis:
                raise RecordError(f'{self.where}: missing key {key!r}')
            return default
        value = self.data[key]
        if not isinstance(value, kind):
            names = '/'.join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind, )))
            raise RecordError(f'{self.where}.{key}: expected {names}, got {value!r}')
        return value

    def sub(self, key: str, default=Ellipsis) -> Optional['_Fields']:
        value = self.get(key, dict, default)
        return None if value is None else _Fields(value, f'{self.where}.{key}')


def _strings(values, where: str) -> Tuple[str, ...]:
    if not all(isinstance(v, str) for v in values):
        raise RecordError(f'{where}: expected a list of strings, got {values!r}')
    return tuple(values)


def _config_file(root: str, value: str, where: str) -> str:
    if not osp.isfile(osp.join(root, value)):
        raise RecordError(f'{where}: {value} is not a file under {root}')
    return value


def _step_cost(fields: Optional[_Fields]) -> Optional[StepCost]:
    if fields is None:
        return None
    target = fields.get('Target', (int, float, type(None)), None)
    return StepCost(
        config=fields.get('Config', str), group=fields.get('Group', str),
        baselines=_strings(fields.get('Baselines', list, []), f'{fields.where}.Baselines'),
        target=None if target is None else float(target), pairs=fields.get('Pairs', bool, False),
        recipe_views=_strings(fields.get('Recipe Views', list), f'{fields.where}.Recipe Views'),
        recipe_batch=fields.get('Recipe Batch', int))


def _mismatched(fields: _Fields) -> Dict[str, Mismatch]:
    cases = {}
    for case in fields.data:
        case_fields = fields.sub(case)
        cases[case] = Mismatch(edit=case_fields.get('Edit', dict),
                               error=case_fields.get('Error', str))
    return cases


def _readme_rows(rows: list, name: str, where: str) -> Tuple[ReadmeRow, ...]:
    parsed = []
    for i, row in enumerate(rows):
        fields = _Fields(row, f'{where}[{i}]')
        parsed.append(ReadmeRow(
            configs=_strings(fields.get('Configs', list), f'{fields.where}.Configs'),
            method=fields.get('Method', str, name), backbone=fields.get('Backbone', str),
            data=fields.get('Data', str), recipe=fields.get('Recipe', str, '')))
    return tuple(parsed)


def read_record(root: str, path: str) -> MethodRecord:
    """The record in ``path`` (relative to the repository ``root``)."""
    try:
        with open(osp.join(root, path)) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise RecordError(f'{path}: cannot read the method record: {e}') from e
    top = _Fields(data, path)
    collections = top.get('Collections', list)
    if len(collections) != 1:
        raise RecordError(f'{path}: Collections: a method record holds one collection, got '
                          f'{len(collections)}')
    collection = _Fields(collections[0], f'{path}: Collections[0]')
    name = collection.get('Name', str)
    meta = collection.sub('Metadata')
    where = meta.where
    family = meta.get('Backbone Family', str)
    if family not in BACKBONE_FAMILIES:
        raise RecordError(f'{where}.Backbone Family: {family!r} is not one of '
                          f'{BACKBONE_FAMILIES}')
    errors = meta.sub('Build Errors')
    variants = meta.sub('Variants', {})
    return MethodRecord(
        name=name, folder=osp.basename(osp.dirname(path)), path=path, backbone_family=family,
        toy_config=_config_file(root, meta.get('Toy Config', str), f'{where}.Toy Config'),
        recipe_config=_config_file(root, meta.get('Recipe Config', str),
                                   f'{where}.Recipe Config'),
        tiny=meta.get('Tiny', dict),
        step_cost=_step_cost(meta.sub('Step Cost', None)),
        mistyped=errors.get('Mistyped', dict),
        mismatched=_mismatched(errors.sub('Mismatched', {})),
        loss_terms=meta.get('Loss Terms', dict, {}),
        variants={v: variants.get(v, dict) for v in variants.data},
        readme_rows=_readme_rows(meta.get('README Rows', list), name, f'{where}.README Rows'))


def record_paths(root: str) -> Tuple[str, ...]:
    """``configs/<method>/metafile.yml`` of every method, in folder order."""
    return tuple(osp.relpath(p, root)
                 for p in sorted(glob.glob(osp.join(root, 'configs', '*', METAFILE))))


def load_records(root: str) -> Dict[str, MethodRecord]:
    """Every method's record under ``root/configs``, by registered algorithm name, in folder
    order; two records naming one algorithm are an error."""
    records = {}
    for path in record_paths(root):
        record = read_record(root, path)
        if record.name in records:
            raise RecordError(f'{path}: Collections[0].Name {record.name!r} is already the name '
                              f'of {records[record.name].path}')
        records[record.name] = record
    return records


# ----------------------------------------------------------------------------- derived text
README_HEADER = '| config | method | backbone | data | recipe |'


def readme_configs_table(records: Mapping[str, MethodRecord]) -> str:
    """The README's Configs table: one line per ``README Rows`` entry of each record, a row's
    further configs named relative to its first one's folder."""
    lines = [README_HEADER, '|---|---|---|---|---|']
    for record in records.values():
        for row in record.readme_rows:
            first, *more = row.configs
            names = ', '.join([f'`{first}`'] + [
                f'`{osp.relpath(c, osp.dirname(first))}`' for c in more])
            cells = [names, row.method, row.backbone, row.data, row.recipe]
            lines.append('| ' + ' | '.join(cells).rstrip() + ' |')
    return '\n'.join(lines) + '\n'


def replace_readme_table(readme: str, table: str, path: str = 'README.md') -> str:
    """``readme`` with the Configs table (from its header line to the first line that does not
    start with ``|``) replaced by ``table``."""
    lines = readme.splitlines(keepends=True)
    try:
        start = lines.index(README_HEADER + '\n')
    except ValueError:
        raise RecordError(f'{path}: no line {README_HEADER!r} (the Configs table) found')
    end = start
    while end < len(lines) and lines[end].startswith('|'):
        end += 1
    return ''.join(lines[:start]) + table + ''.join(lines[end:])


MODEL_INDEX_HEADER = """\
# Model zoo index (OpenMMLab model-index format). Each metafile is a method's record: its
# pretraining configs with the transfer results its paper reports ("Source: paper"; not
# reproduced here), an empty Weights field until checkpoints are released, and the Collection
# Metadata the tests and tools read (docs/adding_a_method.md). Written by
# tools/misc/method_tables.py --write from the configs/*/metafile.yml files.
"""


def model_index_text(records: Mapping[str, MethodRecord]) -> str:
    """``model-index.yml``: the ``Import`` list of every record file."""
    return MODEL_INDEX_HEADER + 'Import:\n' + ''.join(
        f'  - {record.path}\n' for record in records.values())
