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
the check. The sidecar is also checked for the branch.
"""
import copy
import os.path as osp
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.config import Config

from .checkpoints import read_sidecar, sha256sum
from .downstream import build_model, set_backbone_init

FAILING = ('missing', 'mismatched', 'overwritten')
STATUSES = ('loaded', ) + FAILING + ('new', )
# BN's step counter: absent from many published checkpoints, and no weight
UNCHECKED_BUFFERS = ('num_batches_tracked', )


class LoadRecorder:
    """Context manager recording what each module of ``root`` takes from the state dicts it is
    offered while loading, however the loader walks the modules."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.loaded: Dict[str, torch.Tensor] = {}
        self.mismatched: Dict[str, tuple] = {}
        self.offered: Optional[set] = None
        self.consumed: set = set()
        self.root_prefix = ''

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
                self.root_prefix = prefix
                self.offered = {k for k in state_dict if k.startswith(prefix)}
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
        header = f'{"module":<24}' + ''.join(f'{status:>12}' for status in STATUSES)
        lines += [header, '-' * len(header)]
        for row, counter in self.counts().items():
            lines.append(f'{row:<24}' + ''.join(f'{counter.get(s, 0):>12}' for s in STATUSES))
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


def check_branch(report: TransferReport, checkpoint: str, branch: Optional[str]) -> None:
    """Compare the branch in the sidecar with the one asked for (default: the algorithm's)."""
    sidecar = read_sidecar(checkpoint)
    report.sidecar = sidecar
    if sidecar is None:
        message = f'no sidecar JSON next to {checkpoint}: the branch it holds cannot be checked'
        (report.failures if branch else report.notes).append(message)
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


def check_transfer(config, checkpoint: str, branch: Optional[str] = None) -> TransferReport:
    """Build ``config``'s model, initialise its backbone from ``checkpoint`` and report."""
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
    check_branch(report, checkpoint, branch)
    backbone = build_model(cfg).backbone
    report.backbone = type(backbone).__name__
    try:
        with LoadRecorder(backbone) as recorder:
            backbone.init_weights()
    except Exception as e:  # a loader's assert (e.g. a prefix not in the file) is a finding here
        report.failures.append(f'initialising the backbone raised {type(e).__name__}: {e}')
        return report
    if recorder.offered is None:
        report.failures.append(f'nothing was loaded into the backbone: its init_cfg '
                               f'{cfg.model.backbone.init_cfg} did not load a state dict')
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
    failing = Counter(s for s in report.statuses.values() if s in FAILING)
    if failing:
        examples = [n for n, s in report.statuses.items() if s in FAILING][:5]
        report.failures.append(
            f'{sum(failing.values())} backbone tensors keep their random init '
            f'({dict(failing)}), e.g. {examples}')
    return report
