"""Orchestration over every other package, for the tools (the top layer of mmdense: nothing in
mmdense imports it). :mod:`.demo_steps`, :mod:`.demo_scores`, :mod:`.demo_pictures` and
:mod:`.demo_report` are ``tools/demo.py``'s library."""
from .demo_pictures import draw_pictures, plot_losses, query_point
from .demo_report import (format_summary, loss_ends, method_table, methods_footer, read_curves,
                          write_report)
from .demo_scores import SCORE_NAMES, SCORES, evaluate_models, score_model, summarise
from .demo_steps import (METHOD_CONFIGS, METHOD_PROTOCOLS, SCHEDULES, SLOTCON_CONFIG, Demo,
                         MethodsDemo, Schedule, cpu_seconds, select_methods)

__all__ = [
    'draw_pictures', 'plot_losses', 'query_point', 'format_summary', 'loss_ends',
    'method_table', 'methods_footer', 'read_curves', 'write_report', 'SCORE_NAMES', 'SCORES',
    'evaluate_models', 'score_model', 'summarise', 'METHOD_CONFIGS', 'METHOD_PROTOCOLS',
    'SCHEDULES', 'SLOTCON_CONFIG', 'Demo', 'MethodsDemo', 'Schedule', 'cpu_seconds',
    'select_methods'
]
