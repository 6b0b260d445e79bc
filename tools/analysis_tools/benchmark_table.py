"""Side-by-side training-step cost of the dense methods and their baselines.

    python tools/analysis_tools/benchmark_table.py [--iters 10] [--warmup 2] [--threads N]
        [--out-dir work_dirs/step_cost] [--markdown FILE] [--only NAME ...]
        [--amp] [--channels-last] [--device cpu|cuda] [--recipe-crops] [--timeout S]

Runs ``tools/analysis_tools/benchmark.py`` on every step-cost config of
``configs/benchmarks/step_cost/`` (or the ``--only`` ones), one after another in separate
processes with the same thread count, and compares each method with its baseline(s) at equal
backbone, views and images per step:

* ViT-S/16 (2 x 96 px global + 4 x 48 px local crops, 8 images): CoTAP and ADCLR vs DINO;
* ResNet-50 (2 views of 128 px, 8 images): SlotCon and DSC vs mmpretrain's DenseCL and BYOL.

Each method's entry (config, group, baselines, target, recipe views and batch) is the ``Step
Cost`` of its record (``configs/<method>/metafile.yml``); mmpretrain's DenseCL and BYOL, which
are no mmdense methods, are listed here.

The ratio is the method's time per image over the baseline's (images/s of the baseline over
that of the method); "met?" compares it with the method's target. Per config, the benchmark's
JSON and log go to ``--out-dir`` (``NAME.json``, ``NAME.log``); the table is printed and
written as Markdown (``--markdown``, default ``OUT_DIR/table.md``) and as JSON
(``OUT_DIR/table.json``). CoTAP trains on image pairs: its config reads a ring neighbour file
(image i paired with images i+1, i+2) that benchmark.py writes to ``OUT_DIR`` first; the
pairing does not change the cost of a step. Exit status 1 if any benchmark failed.
"""
import argparse
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mmdense.utils.method_records import load_records

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = 'configs/benchmarks/step_cost'
BENCHMARK = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark.py')
NEIGHBOURS_KEY = 'train_dataloader.dataset.neighbours_file'
NEIGHBOURS_FILE = 'ring_neighbours.json'  # benchmark.py writes it (the config's ring_neighbours)


@dataclass(frozen=True)
class Entry:
    name: str  # for --only and the file names
    algorithm: str  # as shown in the table
    group: str
    config: str  # under CONFIG_DIR
    baselines: Tuple[str, ...] = ()
    target: Optional[float] = None  # at most this many times the baseline's time per image
    pairs: bool = False  # its ring neighbour file goes to OUT_DIR
    recipe_views: Tuple[str, ...] = ('global_crops=2x224', )  # --recipe-crops: benchmark.py --views
    recipe_batch: int = 64  # --recipe-crops: images (pairs for CoTAP) per step
    resnet: bool = False  # --channels-last applies


# mmpretrain's baselines of the ResNet-50 group (the recipes' 2 x 224 px views, 64 images)
BASELINES = (
    Entry('densecl', 'DenseCL (mmpretrain)', 'ResNet-50', 'densecl_r50.py', resnet=True),
    Entry('byol', 'BYOL (mmpretrain)', 'ResNet-50', 'byol_r50.py', resnet=True),
)


def method_entries(root: str = ROOT) -> Tuple[Entry, ...]:
    """The entry of every method record with a ``Step Cost``, by record folder."""
    return tuple(
        Entry(record.folder, record.name, cost.group, cost.config, cost.baselines, cost.target,
              cost.pairs, cost.recipe_views, cost.recipe_batch,
              record.backbone_family == 'resnet')
        for record in load_records(root).values() if (cost := record.step_cost) is not None)


def baselines_first(entries: Sequence[Entry]) -> Tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda entry: bool(entry.baselines)))


ENTRIES = baselines_first(method_entries() + BASELINES)
BY_NAME = {e.name: e for e in ENTRIES}
GROUPS = tuple(dict.fromkeys(e.group for e in ENTRIES))  # in order of first appearance


def default_threads() -> int:
    import torch
    return torch.get_num_threads()


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=10, help='timed iterations per config')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations first')
    parser.add_argument('--threads', type=int,
                        help="torch threads for every config (default: torch's default here)")
    parser.add_argument('--out-dir', default=osp.join('work_dirs', 'step_cost'))
    parser.add_argument('--markdown', help='write the Markdown table here '
                        '(default: OUT_DIR/table.md)')
    parser.add_argument('--only', nargs='+', choices=[e.name for e in ENTRIES], metavar='NAME',
                        help=f'run these only ({", ".join(BY_NAME)}); a ratio needs its '
                        'baseline in the same run')
    parser.add_argument('--amp', action='store_true', help='benchmark.py --amp for every config')
    parser.add_argument('--channels-last', action='store_true',
                        help='benchmark.py --channels-last for the ResNet entries')
    parser.add_argument('--device', help='benchmark.py --device (default: its own, cuda if '
                        'available)')
    parser.add_argument('--recipe-crops', action='store_true',
                        help="the recipes' views and batches instead of the CPU-sized ones: "
                        'ResNet-50 2 x 224 px, 64 images; ViT-S/16 2 x 224 + 10 x 96 px (ADCLR: '
                        '4 x 96 px queries), 32 images (CoTAP: 16 pairs) per step')
    parser.add_argument('--timeout', type=float, help='seconds allowed per config')
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# running

def benchmark_command(entry: Entry, args, json_path: str) -> List[str]:
    cmd = [sys.executable, BENCHMARK, osp.join(CONFIG_DIR, entry.config), '--iters',
           str(args.iters), '--warmup', str(args.warmup), '--threads', str(args.threads),
           '--out', json_path]
    if args.amp:
        cmd.append('--amp')
    if args.channels_last and entry.resnet:
        cmd.append('--channels-last')
    if args.device:
        cmd += ['--device', args.device]
    if args.recipe_crops:
        cmd += ['--batch-size', str(entry.recipe_batch), '--views', *entry.recipe_views]
    if entry.pairs:
        cmd += ['--cfg-options', f'{NEIGHBOURS_KEY}={osp.join(args.out_dir, NEIGHBOURS_FILE)}']
    return cmd


def run_one(entry: Entry, args) -> dict:
    """Run benchmark.py for ``entry``; its result dict, or ``{'error': ...}``."""
    json_path = osp.join(args.out_dir, f'{entry.name}.json')
    log_path = osp.join(args.out_dir, f'{entry.name}.log')
    if osp.exists(json_path):
        os.remove(json_path)  # never report a stale result
    cmd = benchmark_command(entry, args, json_path)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    print(f'[{entry.name}] {" ".join(cmd)}', flush=True)
    start = time.perf_counter()
    try:
        with open(log_path, 'w') as log:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=args.timeout)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        returncode = 'timeout'
    wall = time.perf_counter() - start
    if returncode != 0 or not osp.isfile(json_path):
        with open(log_path) as f:
            tail = f.read()[-2000:]
        print(f'[{entry.name}] FAILED ({returncode}) after {wall:.0f} s, log {log_path}:\n{tail}',
              flush=True)
        return dict(error=f'exit status {returncode}', log=log_path)
    with open(json_path) as f:
        result = json.load(f)
    result['wall_s'] = wall
    print(f'[{entry.name}] {result["median_s_per_iter"]:.3f} s/iter, '
          f'{result["images_per_s"]:.2f} images/s ({wall:.0f} s in all)', flush=True)
    return result


# --------------------------------------------------------------------------------------------
# the table


@dataclass
class Row:
    algorithm: str
    baseline: str
    result: dict
    ratio: Optional[float] = None
    target: Optional[float] = None


def ratio_to(result: dict, baseline: Optional[dict]) -> Optional[float]:
    """Time per image of ``result`` over that of ``baseline``."""
    if not baseline or 'error' in baseline or 'error' in result:
        return None
    return baseline['images_per_s'] / result['images_per_s']


def build_rows(results: Dict[str, dict]) -> List[Row]:
    rows = []
    for entry in ENTRIES:
        if entry.name not in results:
            continue
        result = results[entry.name]
        if not entry.baselines:
            rows.append(Row(entry.algorithm, '(baseline)', result))
        for name in entry.baselines:
            rows.append(Row(entry.algorithm, BY_NAME[name].algorithm, result,
                            ratio_to(result, results.get(name)), entry.target))
    return rows


COLUMNS = ('algorithm', 'baseline', 's/iter', 'images/s', 'ratio to baseline', 'target', 'met?',
           'GFLOPs/image', 'peak memory (MiB)')


def format_row(row: Row) -> List[str]:
    result = row.result
    if 'error' in result:
        measured = [f'failed: {result["error"]}', '', '']
    else:
        measured = [f'{result["median_s_per_iter"]:.3f}', f'{result["images_per_s"]:.2f}']
        measured.append('1.00' if row.baseline == '(baseline)' else
                        'n/a' if row.ratio is None else f'{row.ratio:.2f}x')
    target = '' if row.target is None else f'<= {row.target:.2f}x'
    met = '' if row.target is None else 'n/a' if row.ratio is None else \
        ('yes' if row.ratio <= row.target else 'no')
    extra = ['', ''] if 'error' in result else [
        f'{result["gflops_per_image"]:.1f}',
        f'{result["peak_memory_mb"]:.0f} ({result.get("peak_memory_kind", "?")})']
    return [row.algorithm, row.baseline] + measured + [target, met] + extra


def settings_line(results: Dict[str, dict], args) -> str:
    ok = [r for r in results.values() if 'error' not in r]
    device = ok[0]['device'] if ok else (args.device or '?')
    threads = sorted({r['threads'] for r in ok}) or [args.threads]
    precision = 'mixed precision (--amp)' if args.amp else 'fp32'
    return (f'{device}, {"/".join(map(str, threads))} threads, median of {args.iters} timed '
            f'iteration(s) after {args.warmup} warm-up, {precision}'
            f'{", channels_last for the ResNets" if args.channels_last else ""}; '
            f'{platform.node() or "?"}, {time.strftime("%Y-%m-%d")}')


def markdown_table(results: Dict[str, dict], args) -> str:
    lines = []
    for group in GROUPS:
        names = {e.name for e in ENTRIES if e.group == group}
        rows = build_rows({k: v for k, v in results.items() if k in names})
        if not rows:
            continue
        lines += [f'**{group}**', '', '| ' + ' | '.join(COLUMNS) + ' |',
                  '|' + '---|' * len(COLUMNS)]
        lines += ['| ' + ' | '.join(format_row(row)) + ' |' for row in rows]
        lines.append('')
    lines.append(settings_line(results, args))
    return '\n'.join(lines) + '\n'


def table_json(results: Dict[str, dict]) -> List[dict]:
    return [dict(algorithm=row.algorithm, baseline=row.baseline, ratio=row.ratio,
                 target=row.target, met=None if row.ratio is None or row.target is None else
                 row.ratio <= row.target, result=row.result)
            for row in build_rows(results)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    args.threads = args.threads or default_threads()
    args.out_dir = osp.abspath(args.out_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    selected = [e for e in ENTRIES if not args.only or e.name in args.only]
    results = {entry.name: run_one(entry, args) for entry in selected}
    table = markdown_table(results, args)
    print('\n' + table)
    markdown = args.markdown or osp.join(args.out_dir, 'table.md')
    with open(markdown, 'w') as f:
        f.write(table)
    with open(osp.join(args.out_dir, 'table.json'), 'w') as f:
        json.dump(table_json(results), f, indent=2)
    print(f'written: {markdown}, {osp.join(args.out_dir, "table.json")}')
    return 1 if any('error' in r for r in results.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
