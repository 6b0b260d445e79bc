"""Load checkpoint weights into a model, measuring how much of it they cover.

Every tool that loads a checkpoint into a model (``tools/test_dense.py``,
``tools/analysis_tools/visualize_dense.py``, ``visualize_slots.py``,
``tools/misc/build_nn_pairs.py``, and ``tools/train.py``'s ``load_from`` / ``--resume`` through
:class:`~mmdense.engine.hooks.atomic_checkpoint_hook.CheckpointLoadGuardHook`) goes through
:func:`measure_coverage`: of the model tensors that matter (the *required* part: the evaluated
backbone, the backbones, or the whole model), how many the checkpoint fills with a tensor of the
right shape. Loading non-strictly would otherwise run a model on its random init without a word
when the file holds another architecture, an exported backbone (no prefix), or a dict without
``state_dict``. Below ``min_coverage`` (default: all of the required part), or when a loaded
tensor holds NaN/Inf, loading is refused unless partial loads are allowed (``--allow-partial``).
BatchNorm's ``num_batches_tracked`` counters are not weights and are not counted.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from mmdense.utils.errors import UserError

StateDict = Dict[str, torch.Tensor]
MIN_COVERAGE = 1.0
UNCOUNTED_BUFFERS = ('num_batches_tracked', )
WRAPPER_PREFIX = 'module.'  # DDP-wrapped state dicts, stripped as mmengine's runner does


class PartialLoadError(UserError):
    """The checkpoint does not cover the model (refused without ``allow_partial``)."""


@dataclass
class Coverage:
    """What a state dict covers of a model's ``expected`` tensors (names relative to the model)."""
    source: str
    part: str
    expected: List[str]
    loaded: List[str] = field(default_factory=list)
    mismatched: Dict[str, Tuple[tuple, tuple]] = field(default_factory=dict)
    non_finite: List[str] = field(default_factory=list)

    @property
    def missing(self) -> List[str]:
        loaded = set(self.loaded) | set(self.mismatched)
        return [name for name in self.expected if name not in loaded]

    @property
    def fraction(self) -> float:
        return len(self.loaded) / len(self.expected) if self.expected else 1.0

    def summary(self) -> str:
        """One line: ``coverage: loaded 150/152 tensors of the model from F (98.7%) ...``."""
        line = (f'coverage: loaded {len(self.loaded)}/{len(self.expected)} tensors of '
                f'{self.part} from {self.source} ({100 * self.fraction:.1f}%)')
        details = []
        if self.missing:
            details.append(f'{len(self.missing)} missing, e.g. {self.missing[:3]}')
        if self.mismatched:
            name, (found, wanted) = next(iter(self.mismatched.items()))
            details.append(f'{len(self.mismatched)} of another shape, e.g. {name}: file '
                           f'{found}, model {wanted}')
        if self.non_finite:
            details.append(f'{len(self.non_finite)} holding NaN/Inf, e.g. {self.non_finite[:3]}')
        return line + ('; ' + '; '.join(details) if details else '')

    def problem(self, min_coverage: float = MIN_COVERAGE) -> Optional[str]:
        """Why the load must be refused, or None."""
        if self.non_finite:
            return (f'{self.source}: {len(self.non_finite)} tensors of {self.part} hold NaN or '
                    f'Inf values, e.g. {self.non_finite[:3]} (a diverged run?)')
        if self.fraction < min_coverage:
            hint = ''
            if not self.loaded:
                hint = (' (nothing matches: a file of another model or architecture, an exported '
                        'backbone without prefix, or a dict without state_dict?)')
            return (f'{self.source} covers only {len(self.loaded)}/{len(self.expected)} tensors '
                    f'of {self.part} ({100 * self.fraction:.1f}% < '
                    f'{100 * min_coverage:.0f}%){hint}; the rest would keep its random init')
        return None

    def check(self, allow_partial: bool = False, min_coverage: float = MIN_COVERAGE) -> None:
        """Raise :class:`PartialLoadError` for a :meth:`problem` unless ``allow_partial``."""
        problem = self.problem(min_coverage)
        if problem and not allow_partial:
            raise PartialLoadError(f'{problem}; pass --allow-partial to go on anyway')


def checkpoint_weights(checkpoint: dict, source: str) -> StateDict:
    """The tensors of a checkpoint: its ``state_dict`` (or the checkpoint itself, a plain tensor
    dict), with a DDP ``module.`` prefix stripped."""
    weights = checkpoint.get('state_dict', checkpoint)
    if not isinstance(weights, dict):
        raise PartialLoadError(f'{source}: state_dict is a {type(weights).__name__}, not a dict')
    tensors = {}
    for key, value in weights.items():
        if isinstance(value, torch.Tensor):
            key = key[len(WRAPPER_PREFIX):] if key.startswith(WRAPPER_PREFIX) else key
            tensors[key] = value
    return tensors


def is_backbone_key(name: str) -> bool:
    """A tensor of a backbone (``backbone.*``, ``teacher.module.backbone.*`` ...)."""
    return 'backbone' in name.split('.')[:-1]


def module_prefix(model: nn.Module, part: nn.Module) -> str:
    """The state-dict prefix of submodule ``part`` of ``model`` ('' for the model itself)."""
    for name, module in model.named_modules():
        if module is part:
            return name + '.' if name else ''
    raise ValueError(f'{type(part).__name__} is not a submodule of {type(model).__name__}')


def measure_coverage(model: nn.Module,
                     weights: StateDict,
                     source: str,
                     required: Optional[Callable[[str], bool]] = None,
                     part: str = 'the model') -> Coverage:
    """What ``weights`` cover of ``model``'s tensors (those ``required`` accepts, default all)."""
    expected = {name: tensor for name, tensor in model.state_dict().items()
                if name.split('.')[-1] not in UNCOUNTED_BUFFERS
                and (required is None or required(name))}
    coverage = Coverage(source=source, part=part, expected=list(expected))
    for name, tensor in expected.items():
        if name not in weights:
            continue
        if weights[name].shape != tensor.shape:
            coverage.mismatched[name] = (tuple(weights[name].shape), tuple(tensor.shape))
            continue
        coverage.loaded.append(name)
        value = weights[name]
        if value.is_floating_point() and not torch.isfinite(value).all():
            coverage.non_finite.append(name)
    return coverage


def load_weights(model: nn.Module,
                 checkpoint: dict,
                 source: str,
                 required: Optional[Callable[[str], bool]] = None,
                 part: str = 'the model',
                 allow_partial: bool = False,
                 min_coverage: float = MIN_COVERAGE,
                 log: Callable[[str], None] = print) -> Coverage:
    """Load ``checkpoint`` (read from ``source``) into ``model`` after logging its coverage line
    and refusing a partial load (see the module doc). Tensors of another shape are skipped."""
    weights = checkpoint_weights(checkpoint, source)
    coverage = measure_coverage(model, weights, source, required, part)
    log(coverage.summary())
    coverage.check(allow_partial, min_coverage)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in weights.items()
                           if k in own and v.shape == own[k].shape}, strict=False)
    return coverage
