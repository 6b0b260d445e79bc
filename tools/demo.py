"""The CPU demo on the embedded toy scenes: the whole CoTAP recipe, then what it bought.

    python tools/demo.py [--data-root data/toy_scenes] [--work-dir work_dirs/demo]
                         [--skip-dense-eval] [--skip-dense-curve] [--skip-transfer]

1. DINO ViT-S/16 pretraining (configs/dino/vit-s16_toy.py), the baseline CoTAP starts from;
2. nearest-neighbour pairs of the training images by the DINO teacher (build_nn_pairs.py);
3. CoTAP post-training from the DINO teacher (configs/cotap/vit-s_toy.py): per-term losses;
4. frozen dense evaluation (linear probe and kNN retrieval on the toy val split) of CoTAP, DINO
   and three draws of a randomly initialised ViT-S/16;
5. the dense-evaluation learning curve: DINO ViT-Ti/16 for 30 epochs
   (configs/dino/vit-ti16_toy-30e.py, DenseEvalHook every 95 iterations), then its final
   checkpoint against five random-init ViT-Ti/16 draws;
6. transfer: the CoTAP backbone exported into mmdet Mask R-CNN and mmseg UperNet, trained
   briefly and evaluated against random init (tools/benchmarks/toy_transfer.py).
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DINO_CONFIG = 'configs/dino/vit-s16_toy.py'
DINO_CURVE_CONFIG = 'configs/dino/vit-ti16_toy-30e.py'
NUM_RANDOM_DRAWS = 5
COTAP_CONFIG = 'configs/cotap/vit-s_toy.py'
COTAP_TERMS = ('loss_patch', 'loss_cls', 'loss_cross_patch', 'loss_cross_cls')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', default='data/toy_scenes')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--skip-dense-eval', action='store_true')
    parser.add_argument('--skip-dense-curve', action='store_true',
                        help='skip step 5 (16 minutes on 2 CPU cores)')
    parser.add_argument('--skip-transfer', action='store_true')
    return parser.parse_args()


def run(cmd):
    print('[demo] $ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def read_scalars(work_dir, key='loss'):
    """Records holding ``key`` in MMEngine's scalars.json of the latest run in ``work_dir``."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}: did training log?')
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [record for record in map(json.loads, f) if key in record]


def curve(records, key):
    """``step:value`` pairs, one per step (the LoggerHook repeats a hook's value at its step)."""
    by_step = {}
    for record in records:
        by_step.setdefault(record['step'], record[key])
    return ' '.join(f'{step}:{value:.3f}' for step, value in by_step.items())


def print_dense_table(results):
    print('[demo]   backbone      | linear mIoU | kNN mIoU')
    for name, metrics in results.items():
        print(f'[demo]   {name:<13} | {metrics["linear"]["mIoU"]:.4f}      | '
              f'{metrics["knn"]["mIoU"]:.4f}')


def print_ceiling(results):
    ceiling = next(iter(results.values()))['knn']['grid_mIoU']
    print(f'[demo]   ceiling set by the 6 x 6 patch grid (majority label per cell): '
          f'mIoU {ceiling:.4f}')


def dense_eval(config, checkpoint, out, data_root, seed=0):
    run([sys.executable, 'tools/test_dense.py', config, checkpoint, '--protocol', 'linear', 'knn',
         '--dataset', 'toy', '--data-root', data_root, '--img-size', '96', '--num-train', '120',
         '--num-val', '40', '--seed', str(seed), '--out', out])
    with open(osp.join(ROOT, out)) as f:
        return {r['protocol']: r['metrics'] for r in json.load(f)['results']}


def main():
    args = parse_args()
    if not osp.isfile(osp.join(ROOT, args.data_root, 'meta', 'train.txt')):
        raise FileNotFoundError(f'toy data not found under {args.data_root}: run '
                                '`python tools/misc/make_toy_scenes.py` (make demo does)')
    start = time.time()
    times = {}
    dino_dir = osp.join(args.work_dir, 'pretrain_dino')
    run([sys.executable, 'tools/train.py', DINO_CONFIG, '--work-dir', dino_dir,
         '--cfg-options', f'train_dataloader.dataset.data_root={args.data_root}'])
    dino_ckpt = osp.join(dino_dir, 'epoch_1.pth')
    times['DINO pretraining'] = time.time() - start

    step = time.time()
    neighbours = osp.join(args.work_dir, 'toy_neighbours.json')
    run([sys.executable, 'tools/misc/build_nn_pairs.py', COTAP_CONFIG, dino_ckpt, '--out',
         neighbours, '--topk', '5', '--img-size', '96', '--data-root', args.data_root])
    times['neighbour pairs'] = time.time() - step

    step = time.time()
    cotap_dir = osp.join(args.work_dir, 'pretrain_cotap')
    run([sys.executable, 'tools/train.py', COTAP_CONFIG, '--work-dir', cotap_dir,
         '--cfg-options', f'train_dataloader.dataset.dataset.data_root={args.data_root}',
         f'train_dataloader.dataset.neighbours_file={neighbours}',
         f'model.backbone_checkpoint.path={dino_ckpt}'])
    cotap_ckpt = osp.join(cotap_dir, 'iter_100.pth')
    times['CoTAP post-training'] = time.time() - step

    dense, curve_dense, curve_dir = {}, {}, osp.join(args.work_dir, 'pretrain_dino_vit-ti_30e')
    if not args.skip_dense_eval:
        step = time.time()
        eval_dir = osp.join(args.work_dir, 'dense_eval')
        # the random-init scores move with the draw: three draws show the spread
        for name, config, ckpt, seed in (('CoTAP', COTAP_CONFIG, cotap_ckpt, 0),
                                         ('DINO', DINO_CONFIG, dino_ckpt, 0),
                                         *((f'random init {seed}', DINO_CONFIG, 'random', seed)
                                           for seed in range(3))):
            out = osp.join(eval_dir, name.replace(' ', '_') + '.json')
            dense[name] = dense_eval(config, ckpt, out, args.data_root, seed)
        times['dense evaluation'] = time.time() - step

    if not args.skip_dense_curve:
        step = time.time()
        hooks = Config.fromfile(osp.join(ROOT, DINO_CURVE_CONFIG)).custom_hooks
        run([sys.executable, 'tools/train.py', DINO_CURVE_CONFIG, '--work-dir', curve_dir,
             '--cfg-options', f'train_dataloader.dataset.data_root={args.data_root}'] +
            [f'custom_hooks.{i}.data_root={args.data_root}'
             for i, hook in enumerate(hooks) if hook['type'] == 'DenseEvalHook'])
        eval_dir = osp.join(args.work_dir, 'dense_eval_vit-ti')
        for name, ckpt, seed in (('DINO 30 ep', osp.join(curve_dir, 'epoch_30.pth'), 0),
                                 *((f'random init {seed}', 'random', seed)
                                   for seed in range(NUM_RANDOM_DRAWS))):
            out = osp.join(eval_dir, name.replace(' ', '_') + '.json')
            curve_dense[name] = dense_eval(DINO_CURVE_CONFIG, ckpt, out, args.data_root, seed)
        times['dense-evaluation curve (DINO ViT-Ti/16)'] = time.time() - step

    transfer = None
    if not args.skip_transfer:
        step = time.time()
        transfer_dir = osp.join(args.work_dir, 'transfer')
        run([sys.executable, 'tools/benchmarks/toy_transfer.py', cotap_ckpt, '--work-dir',
             transfer_dir, '--data-root', args.data_root, '--random-baseline'])
        with open(osp.join(ROOT, transfer_dir, 'toy_transfer.json')) as f:
            transfer = json.load(f)
        times['transfer (Mask R-CNN + UperNet)'] = time.time() - step

    dino_records = read_scalars(osp.join(ROOT, dino_dir))
    cotap_records = read_scalars(osp.join(ROOT, cotap_dir))
    print('\n[demo] ================ summary ================')
    print(f'[demo] DINO ({DINO_CONFIG}): loss {curve(dino_records, "loss")}')
    print(f'[demo] CoTAP ({COTAP_CONFIG}), from the DINO teacher, on neighbour pairs:')
    for term in COTAP_TERMS:
        print(f'[demo]   {term:<17} {curve(cotap_records, term)}')
    if dense:
        print('[demo] frozen dense evaluation, toy val (40 images, 96 px; fit on 120 train):')
        print_dense_table(dense)
        print_ceiling(dense)
    if curve_dense:
        print(f'[demo] DINO ViT-Ti/16 ({DINO_CURVE_CONFIG}), DenseEvalHook during training:')
        for protocol in ('linear', 'knn'):
            key = f'dense_eval/{protocol}_mIoU'
            print(f'[demo]   {protocol:<6} mIoU ' +
                  curve(read_scalars(osp.join(ROOT, curve_dir), key), key))
        print('[demo] its final checkpoint against random-init ViT-Ti/16 draws (same evaluation):')
        print_dense_table(curve_dense)
        for protocol in ('linear', 'knn'):
            draws = [metrics[protocol]['mIoU'] for name, metrics in curve_dense.items()
                     if name.startswith('random')]
            print(f'[demo]   random init, {protocol} mIoU over {len(draws)} draws: mean '
                  f'{statistics.mean(draws):.4f}, std {statistics.stdev(draws):.4f}, '
                  f'max {max(draws):.4f}')
        print_ceiling(curve_dense)
    if transfer:
        print('[demo] transfer of the CoTAP backbone vs random init (same schedule):')
        for row in transfer['table']:
            print('[demo]   ' + ', '.join(f'{k} {v:.1f}' if isinstance(v, float) else f'{k} {v}'
                                         for k, v in row.items()))
    for name, seconds in times.items():
        print(f'[demo] time: {name} {seconds:.0f} s')
    print(f'[demo] time: total {time.time() - start:.0f} s; outputs under {args.work_dir}')


if __name__ == '__main__':
    main()
