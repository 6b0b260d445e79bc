"""Command-line entry points: user errors as one line, bugs as tracebacks.

Every tool's ``main`` runs under :func:`run_cli`. A mistake the user can fix (a missing or
unreadable file, a directory where a file was expected, a config with a syntax error, a bad
argument value, a read-only output folder) raises :class:`UserError` with a message that names
the file or key and the reason; :func:`run_cli` prints it as ``error: <message>`` on stderr and
exits with status 2 (argparse's status for usage errors). Anything else is a bug and keeps its
traceback. ``--debug`` anywhere on the command line shows the traceback of user errors too.
"""
import argparse
import ast
import difflib
import importlib
import inspect
import os
import os.path as osp
import sys
import textwrap
from typing import Callable, NoReturn, Optional

import torch
from mmengine.config import Config
from mmengine.registry import Registry

from .config_names import resolve_renamed_config
from .errors import UserError, UserKeyError

USER_ERROR_EXIT_CODE = 2
# top-level config keys something reads: mmengine's Runner (from_cfg and self.cfg) and mmdense
# (the fast path of tools/train.py, the CoTAP ring neighbours of the benchmarks, dense eval)
KNOWN_TOP_LEVEL_KEYS = (
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
    'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator',
    'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'model_wrapper_cfg', 'sync_bn',
    'find_unused_parameters', 'strategy', 'compile', 'activation_checkpointing',
    'efficient_conv_bn_eval', 'fast_path', 'ring_neighbours', 'dense_eval_data')
# keys of a dict with ``type`` that mmengine's runner takes before building it: an optimiser
# wrapper's constructor settings, a scheduler's epoch-to-iteration switch, a hook's priority
KEYS_TAKEN_BEFORE_BUILD = ('constructor', 'paramwise_cfg', 'convert_to_iter_based', 'priority')


def load_config(path: str, cfg_options: Optional[dict] = None):
    """``Config.fromfile(path)`` merged with ``cfg_options``; a missing file, a folder or a
    config that fails to execute (syntax error, bad ``_base_``) raises :class:`UserError` naming
    it, and so does an option that nothing would read (:func:`check_cfg_options`). A renamed
    config's old name loads the new one (:mod:`mmdense.utils.config_names`)."""
    path = resolve_renamed_config(path)
    if not osp.exists(path):
        raise FileNotFoundError(f'config not found: {path}')
    if osp.isdir(path):
        raise IsADirectoryError(f'{path} is a folder, not a config file')
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as error:
        raise UserError(f'{path}: syntax error at line {error.lineno}: {error.msg}') from error
    except Exception as error:  # noqa: BLE001 - running a config executes arbitrary user code
        raise UserError(f'{path}: the config cannot be loaded: {type(error).__name__}: '
                        f'{error}') from error
    if cfg_options:
        check_cfg_options(cfg, cfg_options, path)
        cfg.merge_from_dict(cfg_options)
    return cfg


def check_cfg_options(cfg, cfg_options: dict, path: str) -> None:
    """Refuse a ``--cfg-options`` key that nothing would read, with the nearest valid name.

    For each key ``a.b.c`` (list items by index, ``pipeline.0.size``), walking the config:

    - a key the config has is followed;
    - a new key in a dict with a ``type`` (its value after the options) must be an argument of
      the registered class's ``__init__`` (:func:`accepted_arguments`), unless the class takes
      ``**kwargs`` it does not only hand to its base class; the walk ends there;
    - a new top-level key is warned about (nothing reads it), and refused when it is close to an
      existing or a runner key (``train_dataloder``); one the runner reads is accepted;
    - a new key in a dict without ``type`` is refused when it is close to an existing one, and
      always when it is not the last (``a.b`` must exist to set ``a.b.c``);
    - a list index must exist, and only dicts and lists have keys.

    Raises :class:`UserKeyError` ``--cfg-options KEY: <reason> (did you mean 'NAME'?)``.
    """
    for key in cfg_options:
        parts = key.split('.')
        node = cfg
        for depth, part in enumerate(parts):
            where = '.'.join(parts[:depth]) or path
            is_last = depth == len(parts) - 1
            if isinstance(node, (list, tuple)):
                if not (part.isdigit() and int(part) < len(node)):
                    raise UserKeyError(f'--cfg-options {key}: {where} is a list of {len(node)} '
                                       f'items, {part!r} is not one of its indices')
                node = node[int(part)]
                continue
            if not hasattr(node, 'keys'):
                raise UserKeyError(f'--cfg-options {key}: {where} is {node!r}, which has no '
                                   f'key {part!r}')
            if part in node or part.startswith('_'):  # ``_delete_``, ``_scope_``
                node = node.get(part)
                continue
            _check_new_key(cfg, cfg_options, key, parts[:depth], node, is_last, path)
            break


def _check_new_key(cfg, cfg_options: dict, key: str, parent: list, node, is_last: bool,
                   path: str) -> None:
    """Raise :class:`UserKeyError` unless ``key``'s part after ``parent`` (missing from
    ``node``, the dict at ``parent``) is read by something; see :func:`check_cfg_options`."""
    part = key.split('.')[len(parent)]
    where = '.'.join(parent)
    obj_type = cfg_options.get('.'.join(parent + ['type']), node.get('type'))
    if obj_type is not None:
        classes = registered_objects(obj_type, node.get('_scope_') or cfg.get('default_scope'))
        names = [accepted_arguments(obj) for obj in classes]
        if (not classes or None in names or part in KEYS_TAKEN_BEFORE_BUILD
                or any(part in accepted for accepted in names)):
            return  # not registered here, or takes it (or **kwargs we cannot follow)
        valid = sorted(set().union(*names) | set(node.keys()))
        owner = '/'.join(getattr(obj, '__name__', str(obj)) for obj in classes)
        raise UserKeyError(f'--cfg-options {key}: {owner} ({where}) takes no argument '
                           f'{part!r}' + _did_you_mean(part, valid))
    if not parent:
        if part in KNOWN_TOP_LEVEL_KEYS:
            return
        close = _did_you_mean(part, list(node.keys()) + list(KNOWN_TOP_LEVEL_KEYS))
        message = f'--cfg-options {key}: {path} has no top-level key {part!r}'
        if close:
            raise UserKeyError(message + close)
        print(f'warning: {message} and nothing reads it', file=sys.stderr)
        return
    close = _did_you_mean(part, list(node.keys()))
    if close or not is_last:
        raise UserKeyError(f'--cfg-options {key}: {where} has no key {part!r}' + close)


def _did_you_mean(name: str, valid: list) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f' (did you mean {close[0]!r}?)' if close else ''


def registered_objects(obj_type, scope: Optional[str]) -> list:
    """The classes (or functions) ``type=obj_type`` builds in ``scope``, one per registry of
    ``<scope>.registry`` that has the name (a name may mean a model and, say, a hook); a class
    or function given as the type itself."""
    if not isinstance(obj_type, str):
        return [obj_type] if callable(obj_type) else []
    try:
        registries = importlib.import_module(f'{scope or "mmengine"}.registry')
    except ImportError:  # a scope whose package is not installed: nothing to check against
        return []
    found = []
    for registry in vars(registries).values():
        if isinstance(registry, Registry):
            ancestor = registry
            while ancestor is not None:  # get() imports the modules of ``registry`` only
                ancestor.import_from_location()
                ancestor = ancestor.parent
            obj = registry.get(obj_type)
            if obj is not None and obj not in found:
                found.append(obj)
    return found


def accepted_arguments(obj) -> Optional[set]:
    """The keyword arguments ``obj(**kwargs)`` accepts (a class: its ``__init__``), or None
    where that cannot be told: ``**kwargs`` that go anywhere but the base class's
    ``__init__``. ``**kwargs`` handed on with ``super().__init__(**kwargs)`` are followed up
    the MRO; ``torch.nn.Module`` and ``object`` take none."""
    if not inspect.isclass(obj):
        return _named_parameters(obj)
    accepted = set()
    for cls in obj.__mro__:
        init = vars(cls).get('__init__')
        if init is None:
            continue
        if cls in (object, torch.nn.Module):
            return accepted
        var_keyword = _var_keyword_name(init)
        if var_keyword is None:
            own = _named_parameters(init)
            return None if own is None else accepted | own
        if not _hands_on_to_base_init(init, var_keyword):
            return None
        accepted |= _keyword_parameters(init)
    return accepted


def _parameters(function) -> dict:
    try:
        return dict(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        return {}


def _named_parameters(function) -> Optional[set]:
    """Names ``function`` accepts as keywords, or None when it also takes ``**kwargs`` or has
    no signature."""
    if not _parameters(function) or _var_keyword_name(function) is not None:
        return None
    return _keyword_parameters(function)


def _keyword_parameters(function) -> set:
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name for name, p in _parameters(function).items() if p.kind in keyword} - {'self'}


def _var_keyword_name(function) -> Optional[str]:
    return next((name for name, p in _parameters(function).items()
                 if p.kind is inspect.Parameter.VAR_KEYWORD), None)


def _hands_on_to_base_init(init, var_keyword: str) -> bool:
    """Whether every use of ``**var_keyword`` in ``init``'s source is ``**var_keyword`` in a
    call to ``super().__init__`` or ``Base.__init__``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return False
    uses = [node for node in ast.walk(tree)
            if isinstance(node, ast.Name) and node.id == var_keyword]
    handed_on = [keyword.value for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                 and node.func.attr == '__init__'
                 for keyword in node.keywords if keyword.arg is None]
    return bool(uses) and all(any(use is value for value in handed_on) for use in uses)


def _is_user_error(error: BaseException) -> bool:
    # Files the user named that cannot be read or written are user errors; ENOSPC is too
    # (the message names the file and the reason, "No space left on device").
    return isinstance(error, (UserError, FileNotFoundError, IsADirectoryError,
                              NotADirectoryError, PermissionError)) or (
        isinstance(error, OSError) and error.errno is not None)


def run_cli(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run ``main()`` and exit with its return code (0 for ``None``); user errors exit 2 with
    one line on stderr, unless ``--debug`` is on the command line."""
    debug = '--debug' in sys.argv[1:]
    if debug:
        sys.argv.remove('--debug')
    try:
        code = main()
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - sorted into user errors and bugs below
        if debug or not _is_user_error(error):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f'error: {message}', file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    sys.exit(code or 0)


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and the ``--local-rank`` that ``torch.distributed.launch`` passes, for the
    tools that start a Runner; parse with :func:`parse_launcher_args`."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launcher_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser.parse_args()``, exporting ``--local-rank`` as ``LOCAL_RANK`` (unless set), which
    mmengine's distributed initialisation reads."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args
