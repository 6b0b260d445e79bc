"""Generate the procedural toy-scene dataset (COCO instances + semantic maps + image lists).

Example::

    python tools/misc/make_toy_scenes.py --out data/toy_scenes
"""
import argparse
import time

from mmdense.datasets.toy_scenes import generate_toy_scenes, toy_scenes_exist


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/toy_scenes', help='output root')
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--random-hues', action='store_true',
                        help='colour-free variant: every object gets a random hue, so only shape '
                        'and texture tell the categories apart')
    parser.add_argument('--texture-period', type=float, nargs=2, metavar=('LOW', 'HIGH'),
                        help='texture period range in pixels (default: 5-10 px scaled by '
                        'img-size/224); keeps textures visible in small images')
    parser.add_argument('--object-radius', type=float, nargs=2, metavar=('LOW', 'HIGH'),
                        help='range of an object\'s circumradius as a fraction of the image '
                        'size, drawn log-uniformly (default: 0.06 0.30)')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if a complete set with these settings exists')
    return parser.parse_args()


def main():
    args = parse_args()
    settings = dict(num_train=args.num_train, num_val=args.num_val, img_size=args.img_size,
                    seed=args.seed, class_hues=not args.random_hues,
                    texture_period=args.texture_period, object_radius=args.object_radius)
    if not args.force and toy_scenes_exist(args.out, **settings):
        print(f'{args.out} already holds a complete toy-scene set with {settings}; '
              'skipping (use --force to regenerate)')
        return
    start = time.perf_counter()
    summary = generate_toy_scenes(args.out, **settings)
    elapsed = time.perf_counter() - start
    print(f'wrote toy scenes to {summary["root"]} in {elapsed:.1f} s '
          f'({args.img_size}x{args.img_size}, seed {args.seed}, '
          f'{len(summary["classes"])} classes: {", ".join(summary["classes"])})')
    for split, counts in summary['splits'].items():
        print(f'  {split}: {counts["images"]} images in images/{split}/, '
              f'{counts["instances"]} instances in annotations/instances_{split}.json, '
              f'semantic maps in semantic/{split}/, image list meta/{split}.txt')
    print('  class names and palettes: meta/classes.json')


if __name__ == '__main__':
    main()
