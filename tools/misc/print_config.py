"""Print a config with its ``_base_`` files merged and ``--cfg-options`` applied.

    python tools/misc/print_config.py CONFIG [--cfg-options k=v ...] [--save-path FILE]

The text is MMEngine's ``Config.pretty_text`` (what ``tools/train.py`` would run, as Python);
``--save-path`` also writes it to a file (``.py``, ``.json`` or ``.yaml``, by extension).
"""
import argparse

from mmengine.config import DictAction

from mmdense.utils.cli import load_config, run_cli
from mmdense.utils.errors import UserValueError


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings, e.g. train_dataloader.batch_size=4')
    parser.add_argument('--save-path', help='also write the merged config here')
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    print(cfg.pretty_text)
    if args.save_path:
        if not args.save_path.endswith(('.py', '.json', '.yaml', '.yml')):
            raise UserValueError(f'--save-path {args.save_path}: the extension must be .py, '
                                 '.json, .yaml or .yml')
        cfg.dump(args.save_path)
        print(f'config saved to {args.save_path}')


if __name__ == '__main__':
    run_cli(main)
