"""What is derived from the method records as text: ``model-index.yml`` imports exactly the
record files (and the ``modelindex`` package loads them), and the README's Configs table is the
records' ``README Rows`` (``tools/misc/method_tables.py --write`` refreshes both)."""
import os.path as osp
import subprocess
import sys

import pytest
import yaml

from algorithm_table import ALGORITHMS
from helpers import ROOT
from mmdense.utils.method_records import (README_HEADER, RecordError, record_paths,
                                          replace_readme_table)

TOOL = osp.join(ROOT, 'tools', 'misc', 'method_tables.py')


def test_model_index_imports_exactly_the_record_files():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    assert imports == list(record_paths(ROOT))
    assert sorted(imports) == sorted(record.path for record in ALGORITHMS.values())


def test_the_modelindex_package_loads_every_record():
    from modelindex import load
    index = load(osp.join(ROOT, 'model-index.yml'))
    collections = {c.name: c for c in index.collections}
    assert sorted(collections) == sorted(ALGORITHMS)
    for name, record in ALGORITHMS.items():
        assert collections[name].metadata.data['Backbone Family'] == record.backbone_family
        with open(osp.join(ROOT, record.path)) as f:
            models = yaml.safe_load(f)['Models']
        assert {m.name for m in index.models if m.in_collection == name} == \
            {m['Name'] for m in models}


def test_the_readme_configs_table_and_the_index_are_those_of_the_records():
    """``method_tables.py`` exits 0: README.md's table and model-index.yml are up to date (on a
    stale file it prints the diff and exits 1; ``--write`` refreshes it)."""
    result = subprocess.run([sys.executable, TOOL], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_every_record_row_is_in_the_readme_once():
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    for record in ALGORITHMS.values():
        for row in record.readme_rows:
            assert readme.count(f'| `{row.configs[0]}`') == 1, (record.path, row.configs[0])


def test_only_the_table_is_replaced():
    readme = f'# title\n\ntext\n\n{README_HEADER}\n|---|\n| old | row |\n\nafter\n| other |\n'
    assert replace_readme_table(readme, f'{README_HEADER}\n| new |\n') == \
        f'# title\n\ntext\n\n{README_HEADER}\n| new |\n\nafter\n| other |\n'


def test_a_readme_without_the_table_is_named():
    with pytest.raises(RecordError, match=r"docs/README.md: no line '\| config \| method"):
        replace_readme_table('# title\n', '', path='docs/README.md')
