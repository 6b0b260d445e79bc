"""The CPU demo on the embedded toy scenes: pretrain, then report what was trained.

    python tools/demo.py [--data-root data/toy_scenes] [--work-dir work_dirs/demo]
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PRETRAIN_CONFIG = 'configs/dino/vit-s16_toy.py'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', default='data/toy_scenes')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    return parser.parse_args()


def run(cmd):
    print('[demo] $ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def read_losses(work_dir):
    """Training losses from MMEngine's scalars.json of the latest run in ``work_dir``."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}: did training log?')
    records = []
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        for line in f:
            record = json.loads(line)
            if 'loss' in record:
                records.append(record)
    return records


def main():
    args = parse_args()
    if not osp.isfile(osp.join(ROOT, args.data_root, 'meta', 'train.txt')):
        raise FileNotFoundError(f'toy data not found under {args.data_root}: run '
                                '`python tools/misc/make_toy_scenes.py` (make demo does)')
    start = time.time()
    pretrain_dir = osp.join(args.work_dir, 'pretrain_dino')
    run([sys.executable, 'tools/train.py', PRETRAIN_CONFIG, '--work-dir', pretrain_dir,
         '--cfg-options', f'train_dataloader.dataset.data_root={args.data_root}'])
    records = read_losses(osp.join(ROOT, pretrain_dir))
    elapsed = time.time() - start
    first, last = records[0], records[-1]
    lowest = min(records, key=lambda r: r['loss'])
    print('\n[demo] ================ summary ================')
    print(f'[demo] trained: DINO ViT-S/16 ({PRETRAIN_CONFIG}) on {args.data_root}')
    print(f'[demo] iterations: {last["step"]}, checkpoints in {pretrain_dir}')
    print(f'[demo] loss: {first["loss"]:.4f} (iter {first["step"]}) -> {last["loss"]:.4f} '
          f'(iter {last["step"]}); lowest {lowest["loss"]:.4f} (iter {lowest["step"]})')
    print('[demo] loss curve: ' + ' '.join(f'{r["step"]}:{r["loss"]:.3f}' for r in records))
    print(f'[demo] time: {elapsed:.0f} s')


if __name__ == '__main__':
    main()
