"""File digests: the SHA-256 of a checkpoint, recorded in export sidecars and evaluation reports."""
import hashlib


def sha256sum(path: str) -> str:
    """Hex SHA-256 of the file at ``path``, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            digest.update(block)
    return digest.hexdigest()
