"""Refresh or check what is derived from the method records as text: ``model-index.yml``'s
``Import`` list and the README's Configs table.

    python tools/misc/method_tables.py          # exit status 1 and a diff if either is stale
    python tools/misc/method_tables.py --write  # rewrite both from configs/*/metafile.yml

The records' format: ``docs/adding_a_method.md``; ``tests/test_tools/test_method_tables.py``
fails while either file differs from what the records give.
"""
import argparse
import difflib
import os.path as osp
import sys

from mmdense.utils.method_records import (load_records, model_index_text, readme_configs_table,
                                          replace_readme_table)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def derived_files(root: str = ROOT) -> dict:
    """{file relative to ``root``: (its text now, the text the records give)}."""
    records = load_records(root)
    with open(osp.join(root, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    with open(osp.join(root, 'model-index.yml'), encoding='utf-8') as f:
        model_index = f.read()
    return {
        'README.md': (readme, replace_readme_table(readme, readme_configs_table(records))),
        'model-index.yml': (model_index, model_index_text(records)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--write', action='store_true', help='rewrite the stale files')
    args = parser.parse_args(argv)
    stale = 0
    for name, (now, derived) in derived_files().items():
        if now == derived:
            continue
        stale += 1
        if args.write:
            with open(osp.join(ROOT, name), 'w', encoding='utf-8') as f:
                f.write(derived)
            print(f'rewrote {name}')
        else:
            sys.stdout.writelines(difflib.unified_diff(
                now.splitlines(keepends=True), derived.splitlines(keepends=True), name,
                f'{name} (from the method records)'))
    return 1 if stale and not args.write else 0


if __name__ == '__main__':
    sys.exit(main())
