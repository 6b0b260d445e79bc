"""Command-line entry points: user errors as one line, bugs as tracebacks.

Every tool's ``main`` runs under :func:`run_cli`. A mistake the user can fix (a missing or
unreadable file, a directory where a file was expected, a config with a syntax error, a bad
argument value, a read-only output folder) raises :class:`UserError` with a message that names
the file or key and the reason; :func:`run_cli` prints it as ``error: <message>`` on stderr and
exits with status 2 (argparse's status for usage errors). Anything else is a bug and keeps its
traceback. ``--debug`` anywhere on the command line shows the traceback of user errors too.
"""
import argparse
import difflib
import os
import os.path as osp
import sys
from typing import Callable, NoReturn, Optional

USER_ERROR_EXIT_CODE = 2
# top-level config keys mmengine's Runner.from_cfg reads
RUNNER_KEYS = ('model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader',
               'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper',
               'param_scheduler', 'val_evaluator', 'test_evaluator', 'default_hooks',
               'custom_hooks', 'data_preprocessor', 'load_from', 'resume', 'launcher', 'env_cfg',
               'log_processor', 'log_level', 'visualizer', 'default_scope', 'randomness',
               'experiment_name')


class UserError(Exception):
    """An input mistake the user can act on; the message names the file/key and the reason."""


class UserValueError(UserError, ValueError):
    """A bad value in the user's input (a ``ValueError`` too)."""


class UserKeyError(UserError, KeyError):
    """A missing key in the user's input (a ``KeyError`` too, printed without quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def load_config(path: str, cfg_options: Optional[dict] = None):
    """``Config.fromfile(path)`` merged with ``cfg_options``; a missing file, a folder or a
    config that fails to execute (syntax error, bad ``_base_``) raises :class:`UserError` naming
    it. An option whose top-level key is neither in the config nor read by the runner (a typo
    such as ``train_dataloder.batch_size``) is warned about on stderr."""
    from mmengine.config import Config
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
    for key in cfg_options or {}:
        top = key.split('.')[0]
        if top not in cfg and top not in RUNNER_KEYS:
            close = difflib.get_close_matches(top, list(cfg.keys()) + list(RUNNER_KEYS), n=1)
            print(f'warning: --cfg-options {key}: {path} has no top-level key {top!r} and '
                  'nothing reads it' + (f' (did you mean {close[0]!r}?)' if close else ''),
                  file=sys.stderr)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


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
