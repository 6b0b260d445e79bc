"""Atomic local file writes for checkpoints.

mmengine 0.10.7's ``LocalBackend.put`` opens the target with ``'wb'`` and writes into it, so a
run killed mid-save leaves a truncated file under the final name. :class:`AtomicLocalBackend`
writes to a hidden temporary file in the same folder, flushes it to disk and renames it over
the target with :func:`os.replace`, which is atomic on POSIX and Windows: readers see either
the old file or the complete new one. The file gets the permissions a plain ``open(path, 'w')``
would give it (``0o666`` less the umask), not the ``0o600`` of the temporary file.
"""
import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

from mmengine.fileio import LocalBackend, register_backend

ATOMIC_BACKEND = 'atomic_local'


def _umask_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open(path, 'w')`` creates files with."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _replace_atomically(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, sync it and rename it to ``path``;
    on any failure the temporary file is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, _umask_file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


def write_atomically(data: bytes, path: Union[str, Path]) -> None:
    """Write ``data`` to ``path`` so that ``path`` never holds a partial file."""
    _replace_atomically(path, lambda f: f.write(data))


def torch_save_atomically(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save(obj, path)`` such that ``path`` never holds a partial file."""
    import torch
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
