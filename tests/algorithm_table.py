"""The one table of algorithms that the parametrised per-algorithm tests read.

Each row maps a registered algorithm to the builder of its tiny runner config (a shipped toy
config shrunk to CPU-second steps on the toy scenes). A new algorithm is covered by every test
that reads this table by adding one row; ``test_algorithm_table.py`` fails when an algorithm
registered in ``mmdense.models.algorithms`` has no row.
"""
from test_train_resume import (tiny_adclr_config, tiny_cotap_config, tiny_dino_config,
                               tiny_dsc_config, tiny_slotcon_config)

ALGORITHMS = {
    'DINO': tiny_dino_config,
    'ADCLR': tiny_adclr_config,
    'CoTAP': tiny_cotap_config,
    'SlotCon': tiny_slotcon_config,
    'DSC': tiny_dsc_config,
}
