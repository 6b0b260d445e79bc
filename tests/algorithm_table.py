"""The one table of algorithms that the parametrised per-algorithm tests read, built from the
method records (``configs/<method>/metafile.yml``, read by ``mmdense.utils.method_records``).

A record names the algorithm's shipped toy config, the cfg-options (``Tiny``) that shrink it to
CPU-second steps on the toy scenes, and its backbone family (which export targets apply). A new
method is covered by every test that reads this table through its record alone;
``test_models/test_algorithm_table.py`` fails while an algorithm registered in ``MODELS`` has
none.
"""
from typing import Dict

from mmengine.config import Config

from helpers import ROOT, ring_neighbours_file, tiny_run_config
from mmdense.utils.method_records import MethodRecord, apply_options, load_records

ALGORITHMS: Dict[str, MethodRecord] = load_records(ROOT)


def tiny_config(algorithm: str, toy_root: str, max_iters: int) -> Config:
    """The runner config of ``algorithm``'s tiny model on ``toy_root``: its toy config made
    iteration-based (``max_iters``, logging every iteration) and shrunk by its record's
    ``Tiny`` cfg-options."""
    record = ALGORITHMS[algorithm]
    cfg = tiny_run_config(record.toy_config, toy_root, max_iters)
    apply_options(cfg, record.tiny_options(dict(
        data_root=lambda: toy_root, ring_neighbours=lambda: ring_neighbours_file(toy_root))))
    return cfg
