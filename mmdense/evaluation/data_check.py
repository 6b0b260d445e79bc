"""Is a dense-eval data root complete? One report, before any feature is extracted.

:func:`check_data` lists every sample a run will read (the mmseg file lists of each split's
parts, restricted by its image list and count) and stats each image and label map, without
reading them. It reports, per split, how many files each folder holds and lacks, and every
missing folder, list file or annotation file together with the command that makes it: the
dataset config's ``prepare`` table (``dense_eval_data.prepare``) maps paths relative to the data
root to the archive or converter that writes them; the longest matching path wins, ``''``
matches everything. Its commands may use ``{data_root}``, ``{parent}`` and ``{grandparent}``
(the data root and the folders above it) and ``{mmseg_tools}`` (the installed mmsegmentation's
``tools`` folder, where its dataset converters are).
"""
import dataclasses
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmdense.utils.errors import UserError
from .data_files import image_list_path, list_samples, split_parts, split_root


class DataRootError(UserError, FileNotFoundError):
    """The data root lacks files a run needs; the message names each and the command that
    makes it (one line per problem, printed as one error on the command line)."""


def mmseg_tools_dir() -> str:
    """The ``tools`` folder of the installed mmsegmentation (``mmseg/.mim/tools`` of a pip
    install, ``<checkout>/tools`` of an editable one)."""
    import mmseg  # mmseg is optional ([lite] has none): imported when used
    package = osp.dirname(osp.abspath(mmseg.__file__))
    for candidate in (osp.join(package, '.mim', 'tools'), osp.join(osp.dirname(package), 'tools')):
        if osp.isdir(osp.join(candidate, 'dataset_converters')):
            return candidate
    return '<mmsegmentation>/tools'


def _root_fields(data_root: str) -> Dict[str, str]:
    root = osp.normpath(data_root or '.')
    parent = osp.dirname(root) or '.'
    return dict(data_root=root, parent=parent, grandparent=osp.dirname(parent) or '.')


def how_to_make(prepare: Dict[str, str], data_root: str, path: str) -> Optional[str]:
    """The ``prepare`` command for ``path`` (absolute or relative to ``data_root``), formatted
    for this data root, or None when the table has no entry above ``path``."""
    rel = osp.relpath(osp.normpath(path), osp.normpath(data_root or '.')).replace(osp.sep, '/')
    keys = [key for key in prepare
            if key in ('', rel) or rel.startswith(key.rstrip('/') + '/')]
    if not keys:
        return None
    fields = _root_fields(data_root)
    if '{mmseg_tools}' in prepare[max(keys, key=len)]:
        fields['mmseg_tools'] = mmseg_tools_dir()
    return prepare[max(keys, key=len)].format(**fields)


@dataclasses.dataclass
class FolderCount:
    """Files of one kind (``'images'`` / ``'masks'``) that a split reads from one folder."""
    split: str
    kind: str
    folder: str
    found: int = 0
    missing: List[str] = dataclasses.field(default_factory=list)  # file names


@dataclasses.dataclass
class Problem:
    """Something missing: ``what`` names it (the path, or the count and folder), ``hint`` is
    the command that makes it (None when the dataset config's ``prepare`` has none)."""
    split: str
    what: str
    hint: Optional[str]

    def lines(self, hint_given: bool = False) -> List[str]:
        """``split: what`` and, indented, the command (or a pointer to the same one above)."""
        if not self.hint:
            return [f'{self.split}: {self.what}']
        return [f'{self.split}: {self.what}',
                '  make it: ' + ('the command above' if hint_given else self.hint)]


@dataclasses.dataclass
class DataCheck:
    """The outcome of :func:`check_data`.

    ``samples[split]``: the infos a run reads (:func:`.data_files.list_samples`, cut to the count);
    ``num_listed[split]``: the samples the split lists before the cut; ``sources[split]``: where
    its list comes from; ``folders``: the per-folder counts; ``problems``: what is missing.
    """
    roots: List[str]
    samples: Dict[str, List[dict]] = dataclasses.field(default_factory=dict)
    num_listed: Dict[str, int] = dataclasses.field(default_factory=dict)
    sources: Dict[str, str] = dataclasses.field(default_factory=dict)
    folders: List[FolderCount] = dataclasses.field(default_factory=list)
    problems: List[Problem] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """Per split: the samples and their source, then one line per folder (found and
        missing files); then what is missing with its command, or ``complete``."""
        lines = [f"data root {', '.join(self.roots)}"]
        for split in self.sources:
            listed = self.num_listed.get(split)
            if listed is None:
                lines.append(f'{split}: not counted (a folder or list is missing); samples '
                             f'from {self.sources[split]}')
                continue
            used = len(self.samples[split])
            checked = f' (the first {used:,} checked)' if used < listed else ''
            lines.append(f'{split}: {listed:,} samples{checked} from {self.sources[split]}')
            for row in (r for r in self.folders if r.split == split):
                lines.append(f'  {row.kind:6s} {row.folder}: {row.found:,} found, '
                             f'{len(row.missing):,} missing')
        lines += ['complete'] if self.complete else ['MISSING:'] + self._problem_lines()
        return '\n'.join(lines)

    def _problem_lines(self) -> List[str]:
        lines, hints = [], set()
        for problem in self.problems:
            lines += [f'  {line}' for line in problem.lines(problem.hint in hints)]
            hints.add(problem.hint)
        return lines

    def error(self) -> DataRootError:
        """The one error raised for an incomplete root: every problem with its command."""
        return DataRootError(
            f"dense-eval data under {', '.join(self.roots)} is incomplete; nothing was "
            'extracted:\n' + '\n'.join(self._problem_lines()))


def _required_paths(part: dict) -> List[Tuple[str, str]]:
    root = part.get('data_root', '')
    paths = [(f'{key} folder', osp.join(root, prefix))
             for key, prefix in part.get('data_prefix', {}).items()]
    if part.get('ann_file'):
        paths.append(('file list', osp.join(root, part['ann_file'])))
    return paths


def _source(split_cfg: dict) -> str:
    parts = [part.get('ann_file') or f"the files in {part.get('data_prefix', {}).get('img_path')}"
             for part in split_parts(split_cfg)]
    if split_cfg.get('img_list'):
        parts.append(f"restricted to the list {split_cfg['img_list']}")
    return ' + '.join(parts)


def _count_files(check: DataCheck, split: str, split_cfg: dict, infos: List[dict],
                 unlisted: List[str], prepare: Dict[str, str]) -> None:
    parts = split_parts(split_cfg)
    rows: Dict[Tuple[str, str], FolderCount] = {}

    def row(kind: str, part: dict, prefix_key: str) -> FolderCount:
        folder = osp.join(part.get('data_root', ''), part['data_prefix'][prefix_key])
        if (kind, folder) not in rows:
            rows[kind, folder] = FolderCount(split, kind, folder)
        return rows[kind, folder]

    for info in infos:
        part = parts[info['part']]
        for kind, key, prefix_key in (('images', 'img_path', 'img_path'),
                                      ('masks', 'seg_map_path', 'seg_map_path')):
            counter = row(kind, part, prefix_key)
            if osp.isfile(info[key]):
                counter.found += 1
            else:
                counter.missing.append(osp.relpath(info[key], counter.folder))
    if unlisted:
        counter = row('images', parts[0], 'img_path')
        counter.missing += unlisted
    for counter in rows.values():
        check.folders.append(counter)
        if counter.missing:
            total = counter.found + len(counter.missing)
            check.problems.append(Problem(
                split, f'{len(counter.missing):,} of {total:,} {counter.kind} not found in '
                f'{counter.folder} (first: {", ".join(counter.missing[:3])})',
                how_to_make(prepare, split_root(split_cfg), counter.folder)))


def check_data(data_cfg: dict, counts: Dict[str, Optional[int]]) -> DataCheck:
    """Check the files of the splits named in ``counts`` (``split -> number of samples``, the
    first ones of the split; None: all) of ``data_cfg`` (a ``dense_eval_data`` dict).

    Checks, without reading any image: every folder and file list of each split's parts, its
    image list, its instance annotation file, and that each sample's image and label map exist.
    A split whose folders or lists are missing is not counted further.
    """
    prepare = data_cfg.get('prepare', {})
    roots = sorted({split_root(data_cfg[split]) for split in counts})
    check = DataCheck(roots=roots)
    for split, count in counts.items():
        split_cfg = data_cfg[split]
        root = split_root(split_cfg)
        check.sources[split] = _source(split_cfg)
        absent = [(what, path) for part in split_parts(split_cfg)
                  for what, path in _required_paths(part) if not osp.exists(path)]
        for what, key in (('image list', image_list_path(split_cfg)),
                          ('instance annotation file', split_cfg.get('instance_ann_file'))):
            path = key if what == 'image list' else key and osp.join(root, key)
            if path and not osp.isfile(path):
                absent.append((what, path))
        for what, path in absent:
            check.problems.append(Problem(split, f'dataset path not found: {path} ({what})',
                                          how_to_make(prepare, root, path)))
        if any(what != 'instance annotation file' for what, _ in absent):
            continue
        infos, unlisted = list_samples(split_cfg)
        check.num_listed[split] = len(infos)
        check.samples[split] = infos if count is None else infos[:count]
        _count_files(check, split, split_cfg, check.samples[split], unlisted, prepare)
    return check
