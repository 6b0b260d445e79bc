"""`make demo`: show what dense pretraining learns on the embedded toy scenes, in minutes.

    python tools/demo.py [--device auto|cpu|cuda] [--schedule cpu|gpu|tiny] [--resume-demo]
                         [--methods all|dino,adclr,...] [--work-dir work_dirs/demo]
                         [--data-root data/toy_textures]

1. data: the colour-free toy textures (``tools/misc/make_toy_scenes.py --img-size 96
   --random-hues --texture-period 4 8``): every object gets a random hue, so the 8 classes differ
   only by shape and texture, and a random network's colour features do not give them away;
2. SlotCon pretraining of a small ResNet (``configs/demo/slotcon_r18-w16_toy-textures.py``);
3. the score of what it learnt against random-init draws of the same model (same evaluation):
   its teacher's prototype assignment matched one-to-one to the 9 labels (Hungarian) and
   many-to-one (majority label per prototype over the probe's train images;
   ``mmdense.evaluation.prototypes``), k-means on its frozen features (K = 9, Hungarian), and
   linear / kNN probes; the margin of the pretrained score over the best draw in standard
   deviations of the draws;
4. the CoTAP recipe end to end, briefly: DINO ViT-S/16, neighbour pairs by the DINO teacher,
   CoTAP post-training from it (per-term losses);
5. pictures (prototype maps, PCA-RGB of the features, a similarity map; pretrained beside
   random init), loss curves and ``<work-dir>/report.md`` embedding them with the numbers.

Schedules: ``cpu`` (the default without CUDA: 6 SlotCon epochs, the lr cosine ending with the
run, kNN and prototype scores), ``gpu`` (the default with ``--device cuda``: the same steps, 20x
the SlotCon epochs, longer DINO / CoTAP runs, and the linear probe and k-means too; not yet run
on a GPU), and ``tiny`` (the gpu schedule on 48 images, for tests). Without ``--resume-demo``
the work dir and the data are written afresh; with it, finished steps (data, checkpoints) are
reused. Every step's wall and CPU time go into the report. The console shows one line per step
(a progress bar while it runs), the table and the report's path; the programs it runs write to
``console.log`` in their work dirs.

``--methods all`` (or comma-separated names; not part of ``make demo``) runs in place of the
demo: on the same toy textures, each of DINO, ADCLR, iBOT, CoTAP, SlotCon and DSC is pretrained
with its demo config (``mmdense.apis.METHOD_CONFIGS``; CoTAP post-trains DINO's teacher on the
neighbour pairs it finds) and its kNN (k=10) val mIoU is scored against ``random_draws`` random
inits of the same model; the table (margins in std of the draws, loss first → last, wall and CPU
seconds per method, the load average) goes to the console and ``<work-dir>/methods.md``, every
draw to ``methods.json``. This file orders the steps; they live in ``mmdense.apis``.
"""
import argparse
import json
import os
import time
from dataclasses import asdict

import torch

from mmdense.apis import (METHOD_CONFIGS, SCHEDULES, SLOTCON_CONFIG, Demo, MethodsDemo,
                          cpu_seconds, draw_pictures, format_summary, method_table,
                          methods_footer, plot_losses, read_curves, select_methods, summarise,
                          write_report)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='auto: cuda when available')
    parser.add_argument('--schedule', choices=sorted(SCHEDULES),
                        help='default: gpu on cuda, cpu otherwise')
    parser.add_argument('--resume-demo', action='store_true',
                        help='reuse the data and the finished training runs of an earlier demo')
    parser.add_argument('--methods', type=parse_methods,
                        help="'all' or comma-separated names of " + ', '.join(METHOD_CONFIGS) +
                        ': pretrain each on the toy textures and score its kNN against random '
                        'inits of the same model, instead of the demo (CoTAP brings DINO, '
                        'whose teacher it starts from)')
    parser.add_argument('--work-dir',
                        help='default: work_dirs/demo, work_dirs/demo_methods with --methods')
    parser.add_argument('--data-root', default='data/toy_textures')
    args = parser.parse_args(argv)
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    args.schedule = args.schedule or ('gpu' if args.device == 'cuda' else 'cpu')
    args.work_dir = args.work_dir or ('work_dirs/demo_methods' if args.methods else
                                      'work_dirs/demo')
    return args


def parse_methods(value):
    try:
        return select_methods(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def steps_of(args):
    """The :class:`~mmdense.apis.Demo` (or, with ``--methods``, ``MethodsDemo``) of ``args``."""
    common = dict(device=args.device, data_root=args.data_root, resume=args.resume_demo)
    if args.methods:
        return MethodsDemo(args.work_dir, args.schedule, args.methods, **common)
    return Demo(args.work_dir, args.schedule, **common)


def main_methods(args):
    """``--methods``: every named method pretrained and scored against random inits; the table
    goes to the console, ``<work-dir>/methods.md`` and ``methods.json`` (every draw, every loss
    term's first and last value, the times and the load average)."""
    demo = steps_of(args)
    demo.start()
    start, start_cpu, load_start = time.time(), cpu_seconds(), os.getloadavg()
    print(f'[demo] methods {", ".join(args.methods)}, schedule {args.schedule} on {args.device}')
    print(f'[demo] the training runs log to console.log in their work dirs under {args.work_dir}')
    demo.timed('toy textures', demo.make_data)
    evidence = {}
    for method in args.methods:
        evidence[method] = demo.run_method(method)
        total = dict(wall=time.time() - start, cpu=cpu_seconds() - start_cpu)
        load = dict(start=load_start, end=os.getloadavg(), cpus=os.cpu_count())
        with open(demo.path('methods.json'), 'w') as f:  # after each method: a cut run keeps them
            json.dump(dict(schedule=asdict(demo.schedule), device=args.device, evidence=evidence,
                           total=total, load_average=load), f, indent=2)
    table, footer = method_table(evidence), methods_footer(total, load)
    with open(demo.path('methods.md'), 'w') as f:
        f.write('\n'.join(table + ['', footer]) + '\n')
    print('[demo] ===== kNN (k=10) val mIoU: each method vs random inits of its model =====')
    print('\n'.join(f'[demo] {line}' for line in table))
    print(f'[demo] {footer}')
    print(f'[demo] table and every draw: {demo.path("methods.md")}, {demo.path("methods.json")}')


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda, but torch sees no CUDA device')
    if args.methods:
        return main_methods(args)
    demo = steps_of(args)
    demo.start()
    start, start_cpu = time.time(), cpu_seconds()
    print(f'[demo] schedule {args.schedule} on {args.device}: {asdict(demo.schedule)}')
    print(f'[demo] the training runs log to console.log in their work dirs under {args.work_dir}')
    demo.timed('toy textures', demo.make_data)
    checkpoint = demo.timed('SlotCon pretraining', demo.pretrain_slotcon)
    results = demo.timed('scores vs random init', demo.evaluate, checkpoint)
    dino_dir, cotap_dir = demo.timed('CoTAP recipe (DINO, pairs, CoTAP)', demo.cotap_recipe)
    pictures = demo.timed('pictures', draw_pictures, SLOTCON_CONFIG, checkpoint,
                          args.data_root, args.work_dir, args.device)
    curves = read_curves(demo.loss_runs(dino_dir, cotap_dir))
    pictures['losses'] = plot_losses(curves, demo.path('losses.png'))
    demo.times['total'] = dict(wall=time.time() - start, cpu=cpu_seconds() - start_cpu)
    summary = summarise(results)
    run = dict(schedule=args.schedule, device=args.device, data_root=args.data_root,
               config=SLOTCON_CONFIG)
    report = write_report(demo.path('report.md'), run, demo.schedule, summary, results, curves,
                          pictures, demo.times)
    print(format_summary(summary, demo.times))
    print(f'[demo] report with the pictures and loss curves: {report}')


if __name__ == '__main__':
    main()
