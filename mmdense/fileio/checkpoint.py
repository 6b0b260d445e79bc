"""Checkpoint files: atomic writes, stale temporaries, the work-dir lock and safe reads.

mmengine 0.10.7's ``LocalBackend.put`` opens the target with ``'wb'`` and writes into it, so a
run killed mid-save leaves a truncated file under the final name. :class:`AtomicLocalBackend`
writes to a hidden temporary file in the same folder, flushes it to disk and renames it over
the target with :func:`os.replace`, which is atomic on POSIX and Windows: readers see either
the old file or the complete new one. The file gets the permissions a plain ``open(path, 'w')``
would give it (``0o666`` less the umask), not the ``0o600`` of the temporary file. A write that
fails (a folder that refuses writes, a parent that is a file, a full disk) raises
:class:`OutputWriteError`, an ``OSError`` that names the path the caller gave and the reason,
never the temporary file (torch's own error for a full disk is an ``[enforce fail ...]``
RuntimeError that names neither). Temporary files carry the
writer's pid, so the ones a killed run left behind are recognised and removed
(:func:`remove_stale_temporaries`).

:func:`read_checkpoint` loads a file with ``weights_only=True`` and turns every way a file can be
unreadable (missing, a folder, empty, truncated, corrupt, unsafe pickle) into an error that names
the file and the reason.
"""
import errno
import os
import os.path as osp
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Union

import torch
from mmengine.fileio import LocalBackend, register_backend

try:
    import fcntl  # POSIX: the work-dir lock
except ImportError:  # Windows: runs are not locked
    fcntl = None

from mmdense.utils.config_text import NonLiteralConfigError, read_assignments
from mmdense.utils.errors import UserError, UserValueError

ATOMIC_BACKEND = 'atomic_local'
# .<target name>.<pid>.<random>.tmp
TEMPORARY_NAME = re.compile(r'^\.(?P<target>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$')
LOCK_FILE = '.mmdense-run.lock'


class CheckpointReadError(UserError):
    """A checkpoint file that cannot be read (empty, truncated, corrupt, not a dict)."""


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
    """A checkpoint whose pickle refers to globals ``weights_only=True`` refuses."""


class WorkDirLockedError(UserError):
    """Another live run holds the work dir."""


def _umask_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open(path, 'w')`` creates files with."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _replace_atomically(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, sync it and rename it to ``path``;
    on any failure the temporary file is removed and ``path`` is left as it was. An ``OSError``
    becomes :class:`OutputWriteError`, which names ``path`` as given (never the temporary file)
    and the reason."""
    path = os.fspath(path)
    try:
        _write_beside_and_replace(path, write)
    except OutputWriteError:
        raise
    except OSError as error:
        raise _output_write_error(error, path) from error


def _write_beside_and_replace(path: str, write: Callable[[BinaryIO], None]) -> None:
    folder = osp.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder or '.', prefix=_temporary_prefix(path),
                                    suffix='.tmp')
    try:
        # unbuffered: a failed write raises at once, and closing has nothing left to flush
        with os.fdopen(fd, 'wb', buffering=0) as f:
            writer = _WriteErrorRecorder(f)
            try:
                write(writer)
            except RuntimeError as error:  # torch.save hides the OSError of the write
                if writer.error is None:
                    raise
                raise writer.error from error
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, _umask_file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _temporary_prefix(path: str) -> str:
    """``.<name>.<pid>.``, the name cut so that the temporary's name (the prefix, 8 random
    characters and ``.tmp``) fits the file system's name limit wherever ``path``'s name does."""
    try:
        name_max = os.pathconf(osp.dirname(path) or '.', 'PC_NAME_MAX')
    except (OSError, ValueError):
        name_max = 255
    tail = f'.{os.getpid()}.'
    room = name_max - len('.') - len(tail) - 8 - len('.tmp')
    name = os.fsencode(osp.basename(path))[:max(room, 1)].decode(errors='ignore')
    return f'.{name}{tail}'


class _WriteErrorRecorder:
    """An unbuffered binary file wrapper whose ``write`` writes all of ``data`` (an unbuffered
    write may write less) and remembers the ``OSError`` it raised."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        view = memoryview(data).cast('B')
        try:
            written = 0
            while written < len(view):
                written += self.file.write(view[written:])
            return written
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)


class OutputWriteError(UserError, OSError):
    """An output file that cannot be written: ``errno`` is the OS's, the message names the path
    the user gave and the reason (``cannot write out/x.pth: folder out is not writable
    (Permission denied)``)."""

    def __str__(self) -> str:
        return self.strerror


def _output_write_error(error: OSError, path: str) -> OutputWriteError:
    """``error``, raised while writing ``path`` through its temporary file, restated for
    ``path``: a folder that refuses writes, a parent that is a file, a full disk."""
    reason = error.strerror or str(error)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        # the OS names the temporary file beside ``path``, or a folder makedirs tried to make
        folder = osp.dirname(path) or '.'
        refused = osp.dirname(os.fsdecode(error.filename or path))
        if osp.abspath(refused) == osp.abspath(folder):
            refused = folder  # as the user wrote it
        reason = f'folder {refused} is not writable ({reason})'
    elif error.errno in (errno.ENOTDIR, errno.EEXIST) and (blocker := _file_among_parents(path)):
        reason = f'{blocker} is a file, not a folder'
    elif error.errno == errno.EISDIR:
        reason = 'it is a folder'
    elif error.errno == errno.ENOSPC:
        reason += ' (free space on its file system, or write elsewhere)'
    return OutputWriteError(error.errno, f'cannot write {path}: {reason}')


def _file_among_parents(path: str) -> Union[str, None]:
    """The first of ``path``'s parent folders that exists as something else than a folder."""
    parents = []
    parent = osp.dirname(path)
    while parent and parent not in parents:
        parents.insert(0, parent)
        parent = osp.dirname(parent)
    return next((p for p in parents if osp.lexists(p) and not osp.isdir(p)), None)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Remove the temporary files in ``folder`` that a writer which no longer runs left behind
    (killed mid-save); returns their paths."""
    removed = []
    if not osp.isdir(folder):
        return removed
    for name in os.listdir(folder):
        match = TEMPORARY_NAME.match(name)
        if match and not _process_alive(int(match.group('pid'))):
            path = osp.join(folder, name)
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def refuse_overwriting_inputs(inputs: Dict[str, str], outputs: Dict[str, str]) -> None:
    """Refuse outputs that are one of the inputs, or each other (an argument mistake that would
    destroy a file): ``{role: path}`` each, e.g. ``{'source': SRC}`` and ``{'OUT': OUT}``."""
    seen = {osp.realpath(path): role for role, path in inputs.items()}
    for role, path in outputs.items():
        other = seen.get(osp.realpath(path))
        if other is not None:
            raise UserValueError(f'{role} {path} is the same file as the {other}: writing it '
                                 f'would destroy the {other}; choose another output path')
        seen[osp.realpath(path)] = role


_held_locks: Dict[str, int] = {}  # real path of a work dir → fd of its lock file


def lock_work_dir(work_dir: str) -> bool:
    """Hold ``work_dir`` for this process until it exits (an OS lock, released even when the
    process is killed); another live process holding it raises :class:`WorkDirLockedError`.
    Re-entrant within a process. Returns False where the file system has no locks."""
    key = osp.realpath(work_dir)
    if key in _held_locks:
        return True
    if fcntl is None:
        return False
    os.makedirs(key, exist_ok=True)
    path = osp.join(key, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors='replace').strip() or 'unknown'
        os.close(fd)
        raise WorkDirLockedError(
            f'work dir {work_dir} is in use by another run (pid {holder}, lock {path}): its '
            'checkpoints would be replaced; stop that run or choose another --work-dir') from None
    except OSError:  # no flock on this file system (some network mounts)
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held_locks[key] = fd
    return True


def unlock_work_dir(work_dir: str) -> None:
    """Release the lock :func:`lock_work_dir` took (nothing if this process holds none)."""
    fd = _held_locks.pop(osp.realpath(work_dir), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_atomically(data: bytes, path: Union[str, Path]) -> None:
    """Write ``data`` to ``path`` so that ``path`` never holds a partial file."""
    _replace_atomically(path, lambda f: f.write(data))


def torch_save_atomically(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save(obj, path)`` such that ``path`` never holds a partial file."""
    _replace_atomically(path, lambda f: torch.save(obj, f))


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose ``put`` and ``put_text`` replace the target atomically.

    Select it with ``backend_args=dict(backend='atomic_local')``.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        write_atomically(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        write_atomically(obj.encode(encoding), filepath)


def _load_error_reason(error: Exception) -> str:
    """The informative part of a ``torch.load`` error (its unpickler's reason, else its first
    line)."""
    text = str(error)
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f'{type(error).__name__}: {lines[0] if lines else repr(error)}'


def _weights_only_refusal(error: Exception) -> Union[str, None]:
    """What torch's weights-only unpickler refused to load (``the global `os.system```, ``an
    object of type `numpy.dtypes.ObjectDType```), read from its error; ``None`` when the error is
    not such a refusal (a damaged file)."""
    refusals = (  # torch's wording → what it refused
        (r'GLOBAL (\S+) was not an allowed global', 'the global `{}`'),
        (r'unsupported GLOBAL (\S+) whose module \S+ is blocked', 'the global `{}`'),
        (r'call reduce for unrecognized function (.+?)(?: which belongs to .*)?$', 'the call `{}`'),
        (r'Can only (?:build|create new object for) .* but got (.+)$', 'an object of type `{}`'),
        # the stand-ins of mmdense.utils.compat refusing what they do not build
        (r'checkpoint asks for (.+?); only', 'the call `{}`'),
    )
    for pattern, what in refusals:
        match = re.search(pattern, str(error), re.MULTILINE)
        if match:
            refused = re.sub(r"^<class '(.+)'>$", r'\1', match.group(1).strip())
            return what.format(refused)
    return None


def read_checkpoint(path: str, extra_safe_globals: tuple = ()) -> dict:
    """``torch.load(path, weights_only=True)`` on the CPU (what the allow-list of
    :func:`mmdense.utils.compat.checkpoint_safe_globals` and ``extra_safe_globals`` add is
    allowed), with errors that name ``path`` and the reason; a file that needs anything else is
    refused with one line that names what it needs and what to do
    (:class:`UnsafeCheckpointError`)."""
    path = os.fspath(path)
    if not osp.exists(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if osp.isdir(path):
        raise IsADirectoryError(f'{path} is a folder, not a checkpoint file')
    if osp.getsize(path) == 0:
        raise CheckpointReadError(f'{path}: the file is empty (0 bytes): an interrupted copy or '
                                  'save?')
    try:
        with torch.serialization.safe_globals(list(extra_safe_globals)):
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except OSError as error:
        if error.errno is not None:
            raise
        raise CheckpointReadError(f'{path}: {error}') from error
    except pickle.UnpicklingError as error:
        refused = _weights_only_refusal(error)
        if refused is not None:  # code, or a class weights-only loading does not know
            raise UnsafeCheckpointError(
                f'{path}: refused, not a weights-only checkpoint: it needs {refused}, which '
                'torch.load(weights_only=True) does not allow (a pickle can run code through '
                "it); if you trust the file's source, re-save its tensors in a trusted "
                'environment (torch.load(..., weights_only=False), then torch.save of the '
                'state_dict) and give that file') from error
        raise CheckpointReadError(f'{path}: truncated or corrupt checkpoint '
                                  f'({_load_error_reason(error)})') from error
    except Exception as error:  # noqa: BLE001 - torch raises many types for damaged files
        raise CheckpointReadError(f'{path}: truncated or corrupt checkpoint '
                                  f'({_load_error_reason(error)})') from error
    if not isinstance(checkpoint, dict):
        raise CheckpointReadError(f'{path}: expected a dict of tensors or a checkpoint dict, '
                                  f'found a {type(checkpoint).__name__}')
    return checkpoint


# ----------------------------------------------------------------- the model config of a checkpoint
MODEL_CONFIG_KEY = 'model_config'
PLAIN_TYPES = (str, int, float, bool, type(None))


def plain_copy(value: Any) -> Any:
    """``value`` (a config's ``model``) as plain dicts, lists, tuples and scalars, which load with
    ``weights_only=True``; raises ``TypeError`` for anything else (types, functions)."""
    if isinstance(value, dict):
        return {str(key): plain_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_copy(item) for item in value)
    if isinstance(value, PLAIN_TYPES):
        return value
    raise TypeError(f'{type(value).__name__} is not a plain config value')


def stored_model_config(checkpoint: dict, path: str) -> Union[dict, None]:
    """The ``model`` config a checkpoint was trained with, read without executing anything:
    the plain record ``meta.model_config`` (written by :class:`AtomicCheckpointHook`) or, in
    older checkpoints, the ``model = ...`` literal of the config text ``meta.cfg``. ``None`` when
    the checkpoint holds neither (e.g. an imported file); raises :class:`CheckpointReadError`
    when ``meta.cfg`` holds a model that is not a literal."""
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    record = meta.get(MODEL_CONFIG_KEY)
    if isinstance(record, dict):
        return record
    text = meta.get('cfg')
    if not isinstance(text, str) or not text:
        return None
    try:
        model = read_assignments(text, ['model']).get('model')
    except (SyntaxError, NonLiteralConfigError) as error:
        raise CheckpointReadError(
            f'{path}: the config text in meta.cfg is not plain data ({error}); it is never '
            'executed: give the config file the checkpoint was trained with instead') from None
    return model if isinstance(model, dict) else None
