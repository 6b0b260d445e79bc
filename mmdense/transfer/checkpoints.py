"""Export pretraining checkpoints to downstream backbone files, and import published checkpoints.

An *exported* file is a plain ``{key: Tensor}`` dict holding one backbone in the layout of its
target library (no prefix, nothing but tensors, loadable with ``weights_only=True``), next to a
JSON *sidecar* that records where it came from (source hash, algorithm, branch, architecture).

An *imported* file is an MMEngine-style checkpoint (``meta`` + ``state_dict``) in this project's
algorithm layout: ``backbone.*`` (student) and ``teacher.module.backbone.*`` (EMA teacher), so it
can be exported like a pretraining checkpoint or used as ``load_from`` to continue training.
"""
import json
import os.path as osp
from typing import Dict, Optional, Tuple

import torch
from mmengine.config import Config
from mmpretrain.models import ResNet, VisionTransformer

from mmdense.fileio import (read_checkpoint, refuse_overwriting_inputs, sha256sum,
                            stored_model_config, torch_save_atomically, write_atomically)
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules
from mmdense.utils.errors import UserKeyError, UserValueError

from .keys import (StateDict, backbone_kind, describe_backbone, detect_vit_layout, from_layout,
                   target_layout, to_layout)

BRANCH_PREFIXES = {'student': 'backbone.', 'teacher': 'teacher.module.backbone.'}
# Published algorithms that mmdense imports but does not implement, and the branch they transfer.
PUBLISHED_BRANCHES = {'iBOT': 'teacher'}


def default_branch(algorithm: str, model_cfg: Optional[dict] = None) -> Optional[str]:
    """The branch ``algorithm`` transfers: the model config's ``feat_branch`` where it sets one,
    else the registered class's ``default_transfer_branch`` (the one definition, in
    :class:`~mmdense.models.algorithms.base.TeacherStudentSelfSupervisor`, that ``extract_feat``
    and the dense evaluation read too), else :data:`PUBLISHED_BRANCHES`; ``None`` if unknown."""
    if (model_cfg or {}).get('feat_branch'):
        return model_cfg['feat_branch']
    register_all_modules(init_default_scope=False)
    cls = MODELS.get(algorithm) if algorithm else None
    return getattr(cls, 'default_transfer_branch', None) or PUBLISHED_BRANCHES.get(algorithm)
# published checkpoint formats → (algorithm recorded in the imported file, the backbone kinds it
# publishes: 'vit' in timm names (or another layout keys.detect_vit_layout knows), 'resnet' in
# torchvision names)
IMPORT_FORMATS = {
    'slotcon': ('SlotCon', ('resnet', )),
    'dino': ('DINO', ('vit', 'resnet')),  # ViT-S/B and the ResNet-50 release
    'ibot': ('iBOT', ('vit', )),
    'timm': ('timm', ('vit', )),
    'torchvision': ('torchvision', ('resnet', )),
}
# the format to suggest for a backbone of each kind given with a format that does not publish it
GENERIC_FORMATS = {'vit': 'timm', 'resnet': 'torchvision'}
GENERIC_NAMES = {'vit': 'ViTs', 'resnet': 'ResNets'}
# formats whose training checkpoints hold 'teacher' and 'student' dicts
TEACHER_STUDENT_FORMATS = ('dino', 'ibot')
SIDECAR_FORMAT = 'mmdense-transfer/1'


def sidecar_path(path: str) -> str:
    """``backbone.pth`` → ``backbone.json``."""
    return osp.splitext(path)[0] + '.json'


def load_file(path: str) -> dict:
    """:func:`mmdense.fileio.checkpoint.read_checkpoint`: ``weights_only=True`` (the official
    training scripts' ``args`` namespaces, paths and numpy floats are allowed by
    :func:`mmdense.utils.compat.checkpoint_safe_globals`), errors that name the file."""
    return read_checkpoint(path)


# ------------------------------------------------------------------------------ pretraining side
def checkpoint_algorithm(checkpoint: dict, path: str,
                         config: Optional[str] = None) -> Tuple[str, Optional[dict], Optional[str]]:
    """The algorithm (model type) of an MMEngine checkpoint, its backbone config and its
    transfer branch (:func:`default_branch`): from
    ``config`` (the user's config file) if given, else from the checkpoint, read without
    executing anything (``meta.algorithm`` of an imported file, the plain ``meta.model_config``
    record, or the ``model`` literal of the config text in ``meta.cfg``)."""
    meta = checkpoint.get('meta') or {}
    if config is None and meta.get('algorithm'):
        return (meta['algorithm'], meta.get('backbone_cfg'),
                meta.get('default_branch') or default_branch(meta['algorithm']))
    if config is not None:
        model = Config.fromfile(config).get('model') or {}
        model = model.to_dict() if hasattr(model, 'to_dict') else model
        where = config
    else:
        model, where = stored_model_config(checkpoint, path), f'{path} meta.cfg'
        if model is None:
            raise UserKeyError(f'{path}: no meta.cfg or meta.algorithm: cannot tell which '
                               'algorithm trained it (is it an MMEngine runner checkpoint?); pass '
                               '--config with the config it was trained with')
    if 'type' not in model:
        raise UserKeyError(f'{where}: the model config has no type')
    return model['type'], model.get('backbone'), default_branch(model['type'], model)


def resolve_branch(algorithm: str, branch: Optional[str], path: str,
                   transfer_branch: Optional[str]) -> str:
    """``branch`` if given, else the algorithm's transfer branch."""
    if branch is not None:
        if branch not in BRANCH_PREFIXES:
            raise UserValueError(f'branch must be one of {sorted(BRANCH_PREFIXES)}, got {branch!r}')
        return branch
    if transfer_branch is None:
        raise UserValueError(f'{path}: unknown algorithm {algorithm!r} (neither registered in '
                             f'mmdense nor one of {sorted(PUBLISHED_BRANCHES)}); pass --branch '
                             'teacher|student to choose the backbone to export')
    return transfer_branch


def branch_backbone(state_dict: StateDict, branch: str, path: str, algorithm: str) -> StateDict:
    """The ``branch`` backbone of an algorithm state dict, without its prefix."""
    prefix = BRANCH_PREFIXES[branch]
    backbone = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not backbone:
        raise UserKeyError(f'{path}: {algorithm} checkpoint has no {branch} backbone (no '
                           f"'{prefix}*' keys)")
    return backbone


def reference_backbone(state_dict: StateDict) -> torch.nn.Module:
    """An mmpretrain backbone with the architecture a canonical state dict describes."""
    desc = describe_backbone(state_dict)
    if desc['kind'] == 'resnet':
        if desc['depth'] is None:
            raise UserValueError(f'ResNet with {desc["block"]} blocks {desc["stage_blocks"]} per '
                                 'stage has no standard depth')
        return ResNet(depth=desc['depth'])
    grid = int(round((desc['num_tokens'] - 1)**0.5))
    arch = dict(embed_dims=desc['embed_dims'], num_layers=desc['num_layers'], num_heads=1,
                feedforward_channels=state_dict['layers.0.ffn.layers.0.0.weight'].shape[0])
    return VisionTransformer(
        arch=arch, patch_size=desc['patch_size'], img_size=grid * desc['patch_size'],
        qkv_bias='layers.0.attn.qkv.bias' in state_dict, final_norm='ln1.weight' in state_dict,
        layer_scale_init_value=0.1 if 'layers.0.attn.gamma1.weight' in state_dict else 0.)


def extra_keys(state_dict: StateDict) -> list:
    """Keys a plain mmpretrain backbone of the same architecture does not have (e.g. the
    object-aware filter of CoTAP's last block)."""
    expected = reference_backbone(state_dict).state_dict()
    return sorted(k for k in state_dict if k not in expected)


def _tensors_only(state_dict: StateDict) -> StateDict:
    """Own, contiguous copies: no views into a larger storage, no memory maps."""
    return {k: v.detach().clone().contiguous() for k, v in state_dict.items()}


def _atomic_save(obj, path: str) -> None:
    """``torch.save`` to a synced temporary file renamed over ``path``: an interrupted export
    leaves the previous file (or none), never a truncated one."""
    torch_save_atomically(obj, path)


def export_backbone(source: str, out: str, target: str, branch: Optional[str] = None,
                    config: Optional[str] = None) -> dict:
    """Write the ``branch`` backbone of pretraining checkpoint ``source`` to ``out`` in the
    layout ``target`` expects, and its sidecar; returns the sidecar. ``config``: the config file
    the checkpoint was trained with (default: read from the checkpoint, never executed)."""
    refuse_overwriting_inputs({'source checkpoint': source},
                              {'OUT': out, 'its sidecar': sidecar_path(out)})
    checkpoint = load_file(source)
    if 'state_dict' not in checkpoint:
        raise UserKeyError(f'{source}: no state_dict (expected an MMEngine checkpoint; import '
                           'published checkpoints with tools/model_converters/import_weights.py)')
    algorithm, backbone_cfg, transfer_branch = checkpoint_algorithm(checkpoint, source, config)
    branch = resolve_branch(algorithm, branch, source, transfer_branch)
    backbone = branch_backbone(checkpoint['state_dict'], branch, source, algorithm)
    kind = backbone_kind(backbone)
    layout = target_layout(kind, target)
    exported = _tensors_only(to_layout(backbone, kind, layout))
    _atomic_save(exported, out)
    sidecar = dict(
        format=SIDECAR_FORMAT,
        source=osp.abspath(source),
        source_sha256=sha256sum(source),
        algorithm=algorithm,
        branch=branch,
        default_branch=transfer_branch,
        target=target,
        layout=layout,
        backbone=dict(describe_backbone(backbone), config=backbone_cfg),
        extra_keys=extra_keys(backbone),
        num_tensors=len(exported),
        file_sha256=sha256sum(out),
    )
    write_atomically(json.dumps(sidecar, indent=2).encode(), sidecar_path(out))
    return sidecar


def read_sidecar(path: str) -> Optional[dict]:
    """The sidecar of exported file ``path``, or None when there is none."""
    sidecar = sidecar_path(path)
    if not osp.isfile(sidecar) or osp.realpath(sidecar) == osp.realpath(path):
        return None
    try:
        with open(sidecar) as f:
            record = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserValueError(f'{sidecar}: not a readable sidecar JSON ({error})') from None
    if not isinstance(record, dict):
        raise UserValueError(f'{sidecar}: not a sidecar (a JSON {type(record).__name__})')
    return record


# ----------------------------------------------------------------------------- published weights
def _unwrap(checkpoint: dict, path: str) -> StateDict:
    """The tensor dict inside a checkpoint (``state_dict`` / ``model`` / ``module`` / itself)."""
    for key in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UserKeyError(f'{path}: no tensors found (top-level keys: {list(checkpoint)[:8]})')
    return tensors


def _split(state_dict: StateDict, prefix: str) -> Tuple[StateDict, list]:
    """Keys under ``prefix`` without it, and the other keys; when no key has ``prefix``, all of
    ``state_dict`` and none."""
    if not any(k.startswith(prefix) for k in state_dict):
        return state_dict, []
    return ({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)},
            [k for k in state_dict if not k.startswith(prefix)])


def published_branches(checkpoint: dict, source_format: str,
                       path: str) -> Tuple[Dict[str, StateDict], list]:
    """The backbone(s) of a published checkpoint by branch, in the source's own layout, and the
    keys that are not backbone weights (heads, projectors).

    * ``slotcon``: the official training checkpoint (``module.encoder_k.*`` teacher and
      ``module.encoder_q.*`` student) or a backbone-only release in torchvision names (teacher);
    * ``dino`` / ``ibot``: the official training checkpoint (``teacher`` / ``student`` dicts,
      ``[module.]backbone.*``) or a backbone-only release (teacher): timm names, or torchvision
      names for DINO's ResNet-50; iBOT's ``extract_backbone_weights.py`` wraps it in
      ``state_dict``;
    * ``timm`` / ``torchvision``: one backbone (recorded as the teacher).
    """
    has_branches = isinstance(checkpoint.get('teacher'), dict) or isinstance(
        checkpoint.get('student'), dict)
    if source_format in TEACHER_STUDENT_FORMATS and has_branches:
        sources = {branch: _unwrap(checkpoint[branch], path) for branch in ('teacher', 'student')
                   if branch in checkpoint}
    elif has_branches:
        raise UserValueError(f"{path}: a training checkpoint with 'teacher' and 'student' "
                             f'backbones (the layout of {", ".join(TEACHER_STUDENT_FORMATS)}), '
                             f'not a {source_format} one: import it with '
                             f'--from {" or --from ".join(TEACHER_STUDENT_FORMATS)}')
    else:
        sources = {'teacher': _unwrap(checkpoint, path)}
    branches, others = {}, []
    for branch, state_dict in sources.items():
        backbone, outside = _split(_split(state_dict, 'module.')[0], 'backbone.')
        branches[branch] = backbone
        others += outside
    if source_format == 'slotcon':
        encoders = {branch: _split(branches['teacher'], prefix)
                    for branch, prefix in (('teacher', 'encoder_k.'), ('student', 'encoder_q.'))
                    if any(k.startswith(prefix) for k in branches['teacher'])}
        if encoders:
            others += sorted(set.intersection(*(set(rest) for _, rest in encoders.values())))
            branches = {branch: backbone for branch, (backbone, _) in encoders.items()}
    return branches, sorted(set(others))


def published_kind(state_dict: StateDict, source_format: str, path: str) -> str:
    """``'vit'`` or ``'resnet'``: the kind of a published backbone in its own layout, which must
    be one that ``source_format`` publishes (:data:`IMPORT_FORMATS`)."""
    if 'conv1.weight' in state_dict and 'layer1.0.conv1.weight' in state_dict:
        kind, names = 'resnet', 'a ResNet in torchvision names'
    else:
        try:
            kind, names = 'vit', f'a ViT in {detect_vit_layout(state_dict)} names'
        except UserValueError:
            raise UserValueError(f'{path}: neither a ViT nor a ResNet backbone (first keys: '
                                 f'{list(state_dict)[:5]}); those are the backbones '
                                 'import_weights reads') from None
    publishes = IMPORT_FORMATS[source_format][1]
    if kind not in publishes:
        raise UserValueError(
            f'{path}: holds {names} (keys {list(state_dict)[:2]} ...), but --from '
            f'{source_format} reads {" or ".join(GENERIC_NAMES[k] for k in publishes)}: import '
            f'it with --from {GENERIC_FORMATS[kind]}')
    return kind


def canonical_backbone(state_dict: StateDict, kind: str, path: str) -> Tuple[StateDict, list]:
    """Published backbone of ``kind`` (its own layout) → mmpretrain layout, checked against a
    reference mmpretrain backbone. Returns it and the keys that are not backbone weights (heads,
    ``fc``, iBOT's ``masked_embed`` ...), which are dropped."""
    layout = detect_vit_layout(state_dict) if kind == 'vit' else 'torchvision'
    # canonical name → source name (the conversion renames keys one by one)
    names = from_layout({k: k for k in state_dict}, kind, layout)
    canonical = {name: state_dict[source_name] for name, source_name in names.items()}
    expected = reference_backbone(canonical).state_dict()
    missing = [k for k in expected if k not in canonical]
    if missing:
        raise UserKeyError(f'{path}: the {layout}-layout backbone lacks {len(missing)} keys of its '
                           f'mmpretrain counterpart, e.g. {missing[:5]}')
    for key, value in expected.items():
        if canonical[key].shape != value.shape:
            raise UserValueError(f'{path}: {key} has shape {tuple(canonical[key].shape)}, the '
                                 f'architecture it describes needs {tuple(value.shape)}')
    kept = {names[k] for k in expected}
    dropped = sorted(k for k in state_dict if k not in kept)
    return {k: canonical[k] for k in expected}, dropped


def import_published(source: str, out: str, source_format: str) -> dict:
    """Convert a published checkpoint to an MMEngine-style checkpoint in this project's layout.

    Both ``backbone.*`` and ``teacher.module.backbone.*`` are written; a source with one backbone
    fills both (so continuing training starts from it in the student and the teacher).
    Returns the ``meta`` written.
    """
    if source_format not in IMPORT_FORMATS:
        raise UserValueError(f'unknown source format {source_format!r}; choose from '
                             f'{sorted(IMPORT_FORMATS)}')
    algorithm = IMPORT_FORMATS[source_format][0]
    refuse_overwriting_inputs({'source checkpoint': source}, {'OUT': out})
    checkpoint = load_file(source)
    published, outside = published_branches(checkpoint, source_format, source)
    branches, dropped = {}, set(outside)
    for branch, state_dict in published.items():
        kind = published_kind(state_dict, source_format, source)
        branches[branch], branch_dropped = canonical_backbone(state_dict, kind, source)
        dropped.update(branch_dropped)
    state_dict = {}
    for branch in ('student', 'teacher'):
        weights = branches.get(branch) or next(iter(branches.values()))
        state_dict.update({BRANCH_PREFIXES[branch] + k: v for k, v in weights.items()})
    meta = dict(
        algorithm=algorithm,
        default_branch='teacher' if 'teacher' in branches else 'student',
        imported_from=source_format,
        source=osp.abspath(source),
        source_sha256=sha256sum(source),
        source_branches=sorted(branches),
        dropped_keys=sorted(dropped),
        backbone=describe_backbone(next(iter(branches.values()))),
    )
    _atomic_save(dict(meta=meta, state_dict=_tensors_only(state_dict)), out)
    return meta
