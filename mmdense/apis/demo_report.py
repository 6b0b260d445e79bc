"""The demo's text: loss curves read from MMEngine's logs, the console table and
``report.md`` of the demo, the per-method table of ``--methods``."""
import json
import os
import os.path as osp

from .demo_scores import SCORE_NAMES


def read_scalars(work_dir):
    """Training records of MMEngine's ``vis_data/scalars.json`` (latest run under ``work_dir``)."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}: did training log?')
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_curve(records, key):
    """``[(step, value)]``, one per logged step holding ``key``."""
    by_step = {}
    for record in records:
        if key in record:
            by_step.setdefault(record['step'], record[key])
    return sorted(by_step.items())


def read_curves(runs):
    """``{run: {term: [(step, value)]}}`` for ``runs = {run: (work_dir, terms)}``."""
    curves = {}
    for run, (work_dir, terms) in runs.items():
        records = read_scalars(work_dir)
        curves[run] = {term: loss_curve(records, term) for term in terms}
    return curves


def loss_ends(work_dir):
    """``{term: (first, last)}`` of every logged loss term of the run in ``work_dir``."""
    records = read_scalars(work_dir)
    terms = sorted({key for record in records for key in record if key.startswith('loss')})
    curves = {term: loss_curve(records, term) for term in terms}
    return {term: (points[0][1], points[-1][1]) for term, points in curves.items() if points}


def _margin_cells(row):
    """``'+0.0123 = +4.5 std', '+6.0 std'`` (over the best draw, over the mean), ``n/a`` each
    when the draws have no spread."""
    over_max, over_mean = row['margin_over_max_std'], row['margin_over_mean_std']
    return ('n/a' if over_max is None else
            f'{row["pretrained"] - row["max"]:+.4f} = {over_max:+.1f} std',
            'n/a' if over_mean is None else f'{over_mean:+.1f} std')


def format_summary(summary, times):
    """The console's table: one ``[demo]`` line per score, then one per timed step."""
    lines = ['[demo] ===== what SlotCon pretraining learnt vs random init (val mIoU) =====',
             '[demo] score                              | pretrained | random draws (mean ± std,'
             ' max)          | margin over max']
    for score, row in summary.items():
        margin = row['margin_over_max_std']
        lines.append(f'[demo] {SCORE_NAMES[score]:<34} | {row["pretrained"]:.4f}     | '
                     f'{row["mean"]:.4f} ± {row["std"]:.4f}, max {row["max"]:.4f}    | '
                     + ('n/a' if margin is None else f'{margin:+.1f} std'))
    lines += [f'[demo] time: {name} {t["wall"]:.0f} s wall, {t["cpu"]:.0f} s CPU'
              for name, t in times.items()]
    return '\n'.join(lines)


def write_report(path, run, schedule, summary, results, curves, pictures, times):
    """``report.md``: the margin table with every draw, the pictures, the loss curves, timings.
    ``run``: ``dict(schedule=name, device=..., data_root=..., config=the SlotCon config)``;
    ``schedule``: the :class:`~mmdense.apis.demo_steps.Schedule` it ran."""
    rel = {name: osp.relpath(p, osp.dirname(path)) for name, p in pictures.items()}
    draws = [name for name in results if name != 'pretrained']
    lines = [
        '# mmdense demo report', '',
        f'Schedule `{run["schedule"]}` on `{run["device"]}`; data `{run["data_root"]}` '
        f'(colour-free toy textures: {schedule.num_train} train / {schedule.num_val} val scenes, '
        '96 px, random hue per object, 8 classes that differ only by shape and texture).', '',
        f'SlotCon (`{run["config"]}`), {schedule.slotcon_epochs} epochs at batch '
        f'{schedule.slotcon_batch}, against {len(draws)} random initialisations of the same model '
        '(torch seeds 0..), all scored the same way on the val images: the teacher\'s frozen '
        f'features, kNN / linear probes fit on {schedule.probe_train} train images; k-means and '
        'the prototype assignment matched to the labels by the Hungarian algorithm (one-to-one), '
        'and the prototypes also many-to-one: each takes the majority label of its pixels on '
        f'those {schedule.probe_train} train images.', '',
        '## Pretrained vs random init (val mIoU)', '',
        '| score | pretrained | ' + ' | '.join(draws) +
        ' | draws mean ± std | margin over best draw | over mean |',
        '|---|---|' + '---|' * len(draws) + '---|---|---|',
    ]
    for score, row in summary.items():
        over_max, over_mean = _margin_cells(row)
        lines.append(f'| {SCORE_NAMES[score]} | **{row["pretrained"]:.4f}** | ' +
                     ' | '.join(f'{value:.4f}' for value in row['draws']) +
                     f' | {row["mean"]:.4f} ± {row["std"]:.4f} | {over_max} | {over_mean} |')
    ceiling = results['pretrained'].get('grid_ceiling')
    if ceiling is not None:
        lines += ['', f'Ceiling the feature grid sets (majority label per cell): mIoU '
                  f'{ceiling:.4f}. Chance-level mIoU is about 1/9 of the background IoU.']
    lines += [
        '', '## What the pictures show', '',
        'Prototype maps: each colour is one of the 16 SlotCon prototypes, the argmax over the '
        'teacher\'s projected feature map (12 x 12 cells at 96 px).', '',
        f'![prototype maps]({rel["prototypes"]})', '',
        'PCA-RGB: the first three principal components of the backbone\'s feature maps of these '
        'images, as colour; similar features get similar colours.', '',
        f'![PCA-RGB]({rel["features_pca"]})', '',
        'Similarity: cosine similarity of every feature cell to the one under the white circle '
        '(red: most similar).', '',
        f'![similarity]({rel["similarity"]})', '',
        '## Loss curves', '',
        f'![losses]({rel["losses"]})', '',
    ]
    for run_name, terms in curves.items():
        for term, points in terms.items():
            if points:
                lines.append(f'- {run_name} `{term}`: {points[0][1]:.3f} at iteration '
                             f'{points[0][0]} → {points[-1][1]:.3f} at iteration {points[-1][0]}')
    lines += ['', '## Time', '',
              'Wall and CPU seconds (user + sys of the demo and its subprocesses). CPU time '
              'counts only the demo\'s own work, so other jobs on the machine change it far less '
              'than the wall time; with 2 cores to itself, the demo\'s wall time lies roughly '
              'between half of it (both cores busy) and all of it (one core busy).',
              '', '| step | wall s | CPU s |', '|---|---|---|']
    lines += [f'| {name} | {t["wall"]:.0f} | {t["cpu"]:.0f} |' for name, t in times.items()]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def method_table(evidence):
    """Markdown rows, one per method: kNN of the pretrained model (its transferred branch) and
    of every draw, the margins, the other branch's kNN and margin over the best draw, the grid
    ceiling, the loss and the wall / CPU seconds of pretraining and of scoring."""
    lines = ['| method | config | pretrained kNN | random draws | draws mean ± std | '
             'margin over best draw | over mean | other branch: kNN, over best draw | '
             'grid ceiling | loss first → last | pretrain wall / CPU s | scoring wall / CPU s |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for method, row in evidence.items():
        knn = row['margins']['knn']
        over_max, over_mean = _margin_cells(knn)
        other = row['other_branch']
        other_knn = other['margins']['knn']
        other_cell = (f'{other["branch"]} {other_knn["pretrained"]:.4f}, '
                      f'{_margin_cells(other_knn)[0]}')
        loss = row['losses'].get('loss')
        pretrain, scoring = row['times']['pretrain'], row['times']['score']
        lines.append(
            f'| {method} | `{osp.basename(row["config"])}` | **{knn["pretrained"]:.4f}** | ' +
            ', '.join(f'{value:.4f}' for value in knn['draws']) +
            f' | {knn["mean"]:.4f} ± {knn["std"]:.4f} | {over_max} | {over_mean}' +
            f' | {other_cell} | {row["grid_ceiling"]:.4f} | ' +
            ('—' if loss is None else f'{loss[0]:.3f} → {loss[1]:.3f}') +
            f' | {pretrain["wall"]:.0f} / {pretrain["cpu"]:.0f} | '
            f'{scoring["wall"]:.0f} / {scoring["cpu"]:.0f} |')
    return lines


def methods_footer(total, load):
    """The line under the methods table: total wall / CPU seconds and the load average."""
    return (f'Total {total["wall"]:.0f} s wall, {total["cpu"]:.0f} s CPU on {load["cpus"]} '
            f'CPUs; 1-minute load average {load["start"][0]:.1f} at the start, '
            f'{load["end"][0]:.1f} at the end.')
