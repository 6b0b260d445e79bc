"""Backbone key layouts and the conversions between them.

The canonical layout is mmpretrain's: ``VisionTransformer`` (``patch_embed.projection``,
``layers.i.ln1`` ...) and ``ResNet`` (``conv1``, ``bn1``, ``layer1.0.conv1`` ...). Every other
layout is described by rules that rename canonical keys; the reverse conversion uses the same
rules backwards. Nothing here imports mmdet or mmseg.
"""
import re
from typing import Dict, Sequence, Tuple

from torch import Tensor

from mmdense.utils.errors import UserKeyError, UserValueError

StateDict = Dict[str, Tensor]

# (canonical key, other key): '{i}' stands for a block index; a name ending in '.' renames a prefix
# (everything after it is kept), any other name renames that exact key.
VIT_RULES = {
    'timm': (
        ('patch_embed.projection.', 'patch_embed.proj.'),
        ('layers.{i}.ln1.', 'blocks.{i}.norm1.'),
        ('layers.{i}.ln2.', 'blocks.{i}.norm2.'),
        ('layers.{i}.ffn.layers.0.0.', 'blocks.{i}.mlp.fc1.'),
        ('layers.{i}.ffn.layers.1.', 'blocks.{i}.mlp.fc2.'),
        ('layers.{i}.attn.gamma1.weight', 'blocks.{i}.ls1.gamma'),
        ('layers.{i}.ffn.gamma2.weight', 'blocks.{i}.ls2.gamma'),
        ('layers.{i}.', 'blocks.{i}.'),  # attn.qkv / attn.proj, and parts no rule names
        ('ln1.', 'norm.'),
    ),
    'mmseg': (
        ('layers.{i}.attn.qkv.weight', 'layers.{i}.attn.attn.in_proj_weight'),
        ('layers.{i}.attn.qkv.bias', 'layers.{i}.attn.attn.in_proj_bias'),
        ('layers.{i}.attn.proj.', 'layers.{i}.attn.attn.out_proj.'),
    ),
    'mmpretrain': (),
}
# torchvision's and timm's ResNets name their modules as mmpretrain's does; they add ``fc``.
RESNET_RULES = {'torchvision': (), 'timm': (), 'mmpretrain': ()}
RESNET_CLASSIFIER_PREFIX = 'fc.'
# the backbone layout each transfer target expects
TARGET_LAYOUTS = {
    'vit': dict(mmdet='mmpretrain', mmseg='mmseg', mmpretrain='mmpretrain', timm='timm'),
    'resnet': dict(mmdet='mmpretrain', mmseg='mmpretrain', mmpretrain='mmpretrain',
                   timm='timm', torchvision='torchvision'),
}
TARGETS = ('mmdet', 'mmseg', 'mmpretrain', 'timm', 'torchvision')
RESNET_DEPTHS = {('basic', (2, 2, 2, 2)): 18, ('basic', (3, 4, 6, 3)): 34,
                 ('bottleneck', (3, 4, 6, 3)): 50, ('bottleneck', (3, 4, 23, 3)): 101,
                 ('bottleneck', (3, 8, 36, 3)): 152}


def _compile(name: str) -> Tuple[re.Pattern, bool]:
    pattern = re.escape(name).replace(re.escape('{i}'), r'(?P<i>\d+)')
    is_prefix = name.endswith('.')
    return re.compile('^' + pattern + ('(?P<rest>.*)$' if is_prefix else '$')), is_prefix


def _rename(key: str, rules: Sequence[Tuple[str, str]]) -> str:
    """``key`` renamed by the first rule (source → destination) that matches it."""
    for source, destination in rules:
        pattern, is_prefix = _compile(source)
        match = pattern.match(key)
        if match:
            renamed = destination.replace('{i}', match.groupdict().get('i') or '')
            return renamed + (match.group('rest') if is_prefix else '')
    return key


def convert_keys(state_dict: StateDict, rules: Sequence[Tuple[str, str]],
                 reverse: bool = False) -> StateDict:
    """Rename the keys of ``state_dict`` with ``rules`` (canonical → other, or back with
    ``reverse``); keys no rule matches are kept as they are."""
    if reverse:
        rules = [(other, canonical) for canonical, other in rules]
    converted = {}
    for key, value in state_dict.items():
        new_key = _rename(key, rules)
        if new_key in converted:
            raise UserKeyError(f'two keys map to {new_key!r} (one of them {key!r})')
        converted[new_key] = value
    return converted


def backbone_kind(state_dict: StateDict) -> str:
    """``'vit'`` or ``'resnet'`` for a canonical (mmpretrain-layout) backbone state dict."""
    if 'patch_embed.projection.weight' in state_dict and 'layers.0.attn.qkv.weight' in state_dict:
        return 'vit'
    if 'conv1.weight' in state_dict and 'layer1.0.conv1.weight' in state_dict:
        return 'resnet'
    raise UserValueError('the backbone is neither an mmpretrain VisionTransformer nor a ResNet '
                         f'(first keys: {list(state_dict)[:5]}); no transfer layout is known '
                         'for it')


def detect_vit_layout(state_dict: StateDict) -> str:
    """The ViT layout (``mmpretrain``, ``mmseg`` or ``timm``) of a backbone state dict."""
    if 'blocks.0.attn.qkv.weight' in state_dict or 'patch_embed.proj.weight' in state_dict:
        return 'timm'
    if 'layers.0.attn.attn.in_proj_weight' in state_dict:
        return 'mmseg'
    if 'layers.0.attn.qkv.weight' in state_dict:
        return 'mmpretrain'
    raise UserValueError('not a ViT state dict in a known layout (first keys: '
                         f'{list(state_dict)[:5]})')


def to_layout(state_dict: StateDict, kind: str, layout: str) -> StateDict:
    """Canonical backbone ``state_dict`` of ``kind`` → ``layout``."""
    rules = VIT_RULES if kind == 'vit' else RESNET_RULES
    if layout not in rules:
        raise UserValueError(f'no {layout!r} layout for a {kind} backbone; known: {sorted(rules)}')
    return convert_keys(state_dict, rules[layout])


def from_layout(state_dict: StateDict, kind: str, layout: str) -> StateDict:
    """``layout`` → canonical; drops ResNet classifier weights (``fc.*``)."""
    if kind == 'resnet':
        return {k: v for k, v in state_dict.items() if not k.startswith(RESNET_CLASSIFIER_PREFIX)}
    return convert_keys(state_dict, VIT_RULES[layout], reverse=True)


def target_layout(kind: str, target: str) -> str:
    if target not in TARGETS:
        raise UserValueError(f'unknown target {target!r}; choose from {TARGETS}')
    layouts = TARGET_LAYOUTS[kind]
    if target not in layouts:
        raise UserValueError(f'target {target!r} is not supported for a {kind} backbone; '
                             f'supported: {sorted(layouts)}')
    return layouts[target]


def describe_backbone(state_dict: StateDict) -> dict:
    """Architecture facts readable from a canonical backbone state dict."""
    kind = backbone_kind(state_dict)
    if kind == 'vit':
        patch = state_dict['patch_embed.projection.weight']
        num_layers = 1 + max(int(k.split('.')[1]) for k in state_dict if k.startswith('layers.'))
        return dict(kind=kind, embed_dims=int(patch.shape[0]), num_layers=num_layers,
                    patch_size=int(patch.shape[-1]),
                    num_tokens=int(state_dict['pos_embed'].shape[1]))
    blocks = []
    for stage in range(1, 5):
        ids = {int(k.split('.')[1]) for k in state_dict if k.startswith(f'layer{stage}.')}
        blocks.append(len(ids))
    block = 'bottleneck' if 'layer1.0.conv3.weight' in state_dict else 'basic'
    return dict(kind=kind, depth=RESNET_DEPTHS.get((block, tuple(blocks))), block=block,
                stage_blocks=blocks)
