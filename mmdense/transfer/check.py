"""Verify that a downstream model's backbone really starts from an exported file.

The backbone is built from the downstream config and initialised as training would initialise it
(its ``Pretrained`` init, whatever loader that uses: mmengine's, mmseg ViT's own ...), while every
module's ``_load_from_state_dict`` is watched. Each backbone parameter and buffer ends up
*loaded* (present with the right shape, and still holding the loaded value after the init),
*missing*, *mismatched* (shape), *overwritten* (loaded, then re-initialised) or *new* (a module
the downstream wrapper adds, e.g. :class:`ViTPyramid`'s adapter). Checkpoint keys no module took
are *unexpected*: reported only, since a backbone with extra parts (CoTAP's object-aware filter,
listed as ``extra_keys`` in the sidecar) transfers its plain-ViT part. A key that is not such an
extra part but belongs to a module the backbone has (e.g. the bias of mmseg's ViT patch
embedding built with ``patch_bias=False``) is *dropped*: an architecture mismatch, which fails
the check. A loaded tensor holding NaN or Inf is *non-finite*.

The whole start of a run is simulated, as mmengine's runner does it: ``model.init_weights()``
(the backbone's ``init_cfg``, then a model-level ``init_cfg``, which loads after its children),
then ``load_from`` or, with ``resume=True``, the checkpoint the run would resume; what replaces
the exported tensors after they were loaded is reported as *overwritten*, with its cause.

The branch is checked against the sidecar. Without one, a checkpoint holding both branches
(a raw runner checkpoint) is checked by comparing the loaded tensors with each branch's; any
other file must be vouched for with ``--branch``.
"""
import copy
import os.path as osp
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import find_latest_checkpoint

from mmdense.fileio import read_checkpoint, sha256sum, stored_model_config
from mmdense.fileio.load_coverage import checkpoint_weights

from .checkpoints import BRANCH_PREFIXES, default_branch, read_sidecar
from .downstream import build_model, set_backbone_init

FAILING = ('missing', 'mismatched', 'overwritten', 'non-finite')
STATUSES = ('loaded', 'missing', 'mismatched', 'overwritten', 'new')  # table columns
RANDOM_INIT = ('missing', 'mismatched')
# BN's step counter: absent from many published checkpoints, and no weight
UNCHECKED_BUFFERS = ('num_batches_tracked', )


class LoadRecorder:
    """Context manager recording what each module of ``root`` takes from the first state dict it
    is offered while loading, however the loader walks the modules; a later load into ``root``
    (a model-level init) is not recorded, so what it changes shows as overwritten."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.loaded: Dict[str, torch.Tensor] = {}
        self.mismatched: Dict[str, tuple] = {}
        self.offered: Optional[set] = None
        self.consumed: set = set()
        self.root_prefix = ''
        self.finished = False  # the first load into the root is over: later ones overwrite

    def __enter__(self) -> 'LoadRecorder':
        self._patched = []
        for name, module in self.root.named_modules():
            module._load_from_state_dict = self._recording(name, module,
                                                           module._load_from_state_dict)
            self._patched.append(module)
        return self

    def __exit__(self, *exc) -> None:
        for module in self._patched:
            del module._load_from_state_dict  # back to the class's method

    def _recording(self, name: str, module: nn.Module, original):

        def load(state_dict, prefix, *args, **kwargs):
            original(state_dict, prefix, *args, **kwargs)  # runs the load pre-hooks first
            if module is self.root:
                if self.offered is not None:  # a later load (model-level init) overwrites
                    self.finished = True
                    return
                self.root_prefix = prefix
                self.offered = {k for k in state_dict if k.startswith(prefix)}
            if self.finished:
                return
            for local, tensor in own_tensors(module).items():
                key, path = prefix + local, f'{name}.{local}' if name else local
                if key not in state_dict:
                    continue
                self.consumed.add(key)
                if state_dict[key].shape == tensor.shape:
                    self.loaded[path] = state_dict[key].detach().clone()
                else:
                    self.mismatched[path] = (tuple(state_dict[key].shape), tuple(tensor.shape))

        return load

    @property
    def unexpected(self) -> List[str]:
        """Offered keys no module took, relative to the root module."""
        keys = (self.offered or set()) - self.consumed
        return sorted(k[len(self.root_prefix):] for k in keys)


def own_tensors(module: nn.Module) -> Dict[str, torch.Tensor]:
    """A module's own parameters and persistent buffers (not its children's)."""
    tensors = {k: v for k, v in module._parameters.items() if v is not None}
    tensors.update({k: v for k, v in module._buffers.items()
                    if v is not None and k not in module._non_persistent_buffers_set})
    return tensors


def module_group(backbone: nn.Module, name: str) -> str:
    """Report row of a tensor: its top-level module, or block for a ModuleList of blocks."""
    parts = name.split('.')
    child = getattr(backbone, parts[0], None)
    if isinstance(child, nn.ModuleList) and len(parts) > 2:
        return '.'.join(parts[:2])
    return parts[0]


def tensor_statuses(backbone: nn.Module, recorder: LoadRecorder) -> Dict[str, str]:
    """The status of every backbone parameter and buffer after its init (see the module doc)."""
    new_modules = tuple(getattr(backbone, 'new_modules', ()))
    statuses = OrderedDict()
    for name, value in backbone.state_dict().items():
        if name.split('.')[-1] in UNCHECKED_BUFFERS:
            continue
        if name.split('.')[0] in new_modules:
            statuses[name] = 'new'
        elif name in recorder.mismatched:
            statuses[name] = 'mismatched'
        elif name not in recorder.loaded:
            statuses[name] = 'missing'
        elif (recorder.loaded[name].is_floating_point()
              and not torch.isfinite(recorder.loaded[name]).all()):
            statuses[name] = 'non-finite'
        elif torch.equal(value, recorder.loaded[name].to(value.dtype)):
            statuses[name] = 'loaded'
        else:
            statuses[name] = 'overwritten'
    return statuses


@dataclass
class TransferReport:
    config: str
    checkpoint: str
    backbone: str = ''
    statuses: Dict[str, str] = field(default_factory=OrderedDict)  # tensor name → status
    groups: Dict[str, str] = field(default_factory=dict)  # tensor name → report row
    unexpected: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    mismatched: Dict[str, tuple] = field(default_factory=dict)
    failures: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    sidecar: Optional[dict] = None

    @property
    def ok(self) -> bool:
        return not self.failures

    def counts(self) -> Dict[str, Counter]:
        rows = OrderedDict()
        for name, status in self.statuses.items():
            rows.setdefault(self.groups[name], Counter())[status] += 1
        return rows

    def format(self) -> str:
        lines = [f'backbone {self.backbone} of {self.config}',
                 f'initialised from {self.checkpoint}']
        if self.sidecar:
            s = self.sidecar
            lines.append(f"exported from {s.get('algorithm')} ({s.get('branch')} branch) of "
                         f"{s.get('source')}, target {s.get('target')} ({s.get('layout')} layout)")
        columns = STATUSES + (('non-finite', ) if 'non-finite' in self.statuses.values() else ())
        header = f'{"module":<24}' + ''.join(f'{status:>12}' for status in columns)
        lines += [header, '-' * len(header)]
        for row, counter in self.counts().items():
            lines.append(f'{row:<24}' + ''.join(f'{counter.get(s, 0):>12}' for s in columns))
        for name, (found, expected) in self.mismatched.items():
            lines.append(f'shape mismatch: {name}: checkpoint {found}, model {expected}')
        if self.unexpected:
            lines.append(f'unexpected (in the file, parts the backbone lacks; not an error): '
                         f'{len(self.unexpected)}, e.g. {self.unexpected[:6]}')
        if self.dropped:
            lines.append(f'dropped (in the file, for modules the backbone has, which lack them): '
                         f'{self.dropped}')
        lines += [f'note: {n}' for n in self.notes]
        lines += [f'FAIL: {f}' for f in self.failures]
        lines.append('transfer check: ' + ('OK' if self.ok else 'FAILED'))
        return '\n'.join(lines)


def check_branch(report: TransferReport, checkpoint: str, branch: Optional[str],
                 loaded: Dict[str, torch.Tensor]) -> None:
    """Compare the branch the file holds with the one asked for (default: the algorithm's):
    by its sidecar, else by the file's own branches (see the module doc)."""
    sidecar = read_sidecar(checkpoint)
    report.sidecar = sidecar
    if sidecar is None:
        check_branch_without_sidecar(report, checkpoint, branch, loaded)
        return
    if sidecar.get('file_sha256') and sidecar['file_sha256'] != sha256sum(checkpoint):
        report.failures.append(f'{checkpoint} was changed after export: its sha256 differs from '
                               'the one in its sidecar')
    wanted = branch or sidecar.get('default_branch')
    if wanted is None:
        report.notes.append(f"{sidecar.get('algorithm')} has no default transfer branch: pass "
                            '--branch to check the one the file holds')
    elif sidecar.get('branch') != wanted:
        report.failures.append(
            f"{checkpoint} holds the {sidecar.get('branch')} backbone of {sidecar.get('algorithm')}"
            f" but the {wanted} one is wanted ({'asked for' if branch else 'the default'}): "
            f'export it with --branch {wanted}, or pass --branch {sidecar.get("branch")} here')


def loaded_branch(loaded: Dict[str, torch.Tensor], branches: Dict[str, dict]) -> Optional[str]:
    """The branch whose tensors all equal the loaded ones (the teacher when both do)."""
    loaded = {k: v for k, v in loaded.items() if k.split('.')[-1] not in UNCHECKED_BUFFERS}
    for name in ('teacher', 'student'):
        weights = branches[name]
        if all(key in weights and weights[key].shape == value.shape
               and torch.equal(weights[key], value.to(weights[key].dtype))
               for key, value in loaded.items()):
            return name
    return None


def check_branch_without_sidecar(report: TransferReport, checkpoint: str, branch: Optional[str],
                                 loaded: Dict[str, torch.Tensor]) -> None:
    file = read_checkpoint(checkpoint)
    weights = checkpoint_weights(file, checkpoint)
    branches = {name: {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
                for name, prefix in BRANCH_PREFIXES.items()}
    if not (branches['teacher'] and branches['student']):
        if branch is None:
            report.failures.append(
                f'no sidecar JSON next to {checkpoint}: the branch it holds cannot be checked '
                '(a lost sidecar, or not an export); pass --branch teacher|student to accept it '
                'as that branch')
        else:
            report.notes.append(f'no sidecar JSON next to {checkpoint}: taking --branch '
                                f'{branch} on trust')
        return
    if not loaded:
        return  # nothing loaded: reported as missing tensors
    held = loaded_branch(loaded, branches)
    model = stored_model_config(file, checkpoint) or {}
    algorithm = (file.get('meta') or {}).get('algorithm') or model.get('type')
    wanted = branch or default_branch(algorithm, model) or 'teacher'
    why = 'asked for' if branch else f'the transfer branch of {algorithm or "the algorithm"}'
    if held is None:
        report.failures.append(f'{checkpoint} holds a teacher and a student backbone, and the '
                               'tensors the backbone loads match neither')
    elif held != wanted:
        report.failures.append(
            f'{checkpoint} (no sidecar) holds a teacher and a student backbone and the init loads '
            f'the {held} one (prefix {BRANCH_PREFIXES[held]!r}), but the {wanted} one is wanted '
            f"({why}): set the init_cfg's prefix to {BRANCH_PREFIXES[wanted]!r}, export the "
            f'{wanted} branch with tools/model_converters/export.py, or pass --branch {held}')
    else:
        report.notes.append(f'{checkpoint} holds both branches; the backbone loads the {held} '
                            "one (checked against the file's tensors)")


def pretrained_init(init_cfg) -> Optional[dict]:
    """The ``Pretrained`` entry of an ``init_cfg`` (a dict or a list of them), if any."""
    for entry in init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]:
        if isinstance(entry, dict) and entry.get('type') == 'Pretrained':
            return entry
    return None


def run_start_checkpoint(cfg: Config) -> Tuple[Optional[str], str]:
    """The checkpoint the runner loads after ``init_weights`` and why (``load_from`` /
    ``resume``), as mmengine's ``Runner.load_or_resume`` picks it."""
    if cfg.get('resume'):
        path = cfg.get('load_from')
        if path is None and cfg.get('work_dir'):
            path = find_latest_checkpoint(cfg.work_dir)
        return path, 'resume'
    return cfg.get('load_from'), 'load_from'


def load_like_the_runner(model: nn.Module, path: str) -> None:
    """``Runner.load_checkpoint``: non-strict, ``module.`` stripped (tensors of another shape
    are skipped here, where mmengine logs them)."""
    weights = checkpoint_weights(read_checkpoint(path), path)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in weights.items()
                           if k in own and own[k].shape == v.shape}, strict=False)


def simulate_run_start(cfg: Config, model: nn.Module, report: TransferReport) -> List[str]:
    """Load what the runner loads after ``init_weights``; returns the causes of changes to the
    backbone's loaded tensors (for the overwritten report)."""
    causes = []
    model_init = pretrained_init(cfg.model.get('init_cfg'))
    if model_init is not None:
        causes.append(f"model.init_cfg loads {model_init.get('checkpoint')} into the whole model "
                      "after the backbone's own init")
    path, why = run_start_checkpoint(cfg)
    if path is None:
        if why == 'resume':
            report.notes.append('resume=True, but there is no checkpoint to resume: the run '
                                'starts from the init')
        return causes
    if why == 'resume':
        report.failures.append(f'resume=True: the runner resumes {path}, so the backbone starts '
                               'from that checkpoint, not from the init; set resume=False')
    if '://' in path:
        report.failures.append(f'{why}={path} is loaded after the init and replaces the backbone '
                               'tensors it holds; it cannot be checked offline: set it to None')
        return causes
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    load_like_the_runner(model, path)
    after = model.backbone.state_dict()
    changed = sum(not torch.equal(before[k], after[k]) for k in before)
    if changed:
        causes.append(f'{why}={path} is loaded after the init (the runner loads it last) and '
                      f'replaces {changed} of {len(before)} backbone tensors')
    return causes


def check_transfer(config, checkpoint: str, branch: Optional[str] = None) -> TransferReport:
    """Build ``config``'s model with its backbone initialised from ``checkpoint``, start it as
    the runner would (see the module doc) and report."""
    cfg = copy.deepcopy(config) if isinstance(config, Config) else Config.fromfile(config)
    name = config if isinstance(config, str) else (cfg.filename or 'config')
    report = TransferReport(config=name, checkpoint=checkpoint)
    if not osp.isfile(checkpoint):
        report.failures.append(f'file not found: {checkpoint}')
        return report
    try:
        set_backbone_init(cfg, checkpoint)
    except ValueError as e:
        report.failures.append(str(e))
        return report
    model = build_model(cfg)
    backbone = model.backbone
    report.backbone = type(backbone).__name__
    try:
        with LoadRecorder(backbone) as recorder:
            model.init_weights()  # the runner's first step: the backbone's init, then the model's
        causes = simulate_run_start(cfg, model, report)
    except Exception as e:  # a loader's assert (e.g. a prefix not in the file) is a finding here
        report.failures.append(f'initialising the model raised {type(e).__name__}: {e}')
        return report
    if recorder.offered is None:
        report.failures.append(f'nothing was loaded into the backbone: its init_cfg '
                               f'{cfg.model.backbone.init_cfg} did not load a state dict')
    check_branch(report, checkpoint, branch, recorder.loaded)
    report.statuses = tensor_statuses(backbone, recorder)
    report.groups = {name: module_group(backbone, name) for name in report.statuses}
    modules = dict(backbone.named_modules())
    extra = set((report.sidecar or {}).get('extra_keys', ()))
    for key in recorder.unexpected:
        owner = key.rpartition('.')[0]
        dropped = owner in modules and key not in extra
        (report.dropped if dropped else report.unexpected).append(key)
    report.mismatched = recorder.mismatched
    if report.dropped:
        report.failures.append(f'{len(report.dropped)} weights in the file have no place in '
                               f'modules the backbone has: {report.dropped[:5]} (architecture '
                               'mismatch)')
    report_failing(report, causes)
    return report


def report_failing(report: TransferReport, causes: List[str]) -> None:
    """One failure per kind of tensor that does not start from the file."""
    reasons = {RANDOM_INIT: 'keep their random init',
               ('overwritten', ): 'are overwritten after loading',
               ('non-finite', ): 'hold NaN or Inf values in the file'}
    for statuses, reason in reasons.items():
        failing = Counter(s for s in report.statuses.values() if s in statuses)
        if not failing:
            continue
        examples = [n for n, s in report.statuses.items() if s in statuses][:5]
        cause = f' ({"; ".join(causes)})' if statuses == ('overwritten', ) and causes else ''
        report.failures.append(f'{sum(failing.values())} backbone tensors {reason} '
                               f'({dict(failing)}), e.g. {examples}{cause}')
