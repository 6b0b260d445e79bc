"""Config names follow the scheme of configs/README.md, every recipe has one file, a renamed
config keeps working under its old name through the one table of mmdense.utils.config_names
until the release that removes it, and the bases keep their roles: pipeline bases export
``train_pipeline``, model bases hold the model only."""
import glob
import json
import os.path as osp
import re
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmdense.utils.cli import load_config
from mmdense.utils.config_names import RENAMED_CONFIGS, RENAMES_REMOVED_IN
from mmdense.version import parse_version_info, version_info
from helpers import ROOT

RENAME_TABLE = osp.join(ROOT, 'mmdense', 'utils', 'config_names.py')
RENAME_DOC = osp.join(ROOT, 'configs', 'README.md')
# a method folder holds its record (configs/<method>/metafile.yml); configs/demo its demo runs
METHODS = tuple(sorted(osp.basename(osp.dirname(p))
                       for p in glob.glob(osp.join(ROOT, 'configs', '*', 'metafile.yml'))))

BACKBONE = r'(vit-(ti|s|b|l)(8|14|32)?|r(18|34|50|101|152))(-w\d+)?'
DATASET = r'(in1k|coco|cocoplus|toy|toy-textures)'
SCHEDULE = r'\d+[ek]'
VARIANT = r'[a-z][a-z0-9]*(-[a-z0-9]+)*'
NAME = re.compile(rf'{BACKBONE}_{DATASET}(-{DATASET})*(-{SCHEDULE})?(_{VARIANT})?')
DEMO_NAME = re.compile(rf'[a-z]+_{NAME.pattern}')


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def rel(path):
    return osp.relpath(path, ROOT)


CONFIGS = sorted(p for d in METHODS + ('demo', )
                 for p in glob.glob(osp.join(ROOT, 'configs', d, '*.py')))


def name_follows_scheme(path):
    name = osp.splitext(osp.basename(path))[0]
    folder = osp.basename(osp.dirname(path))
    if folder == 'demo':
        return DEMO_NAME.fullmatch(name) is not None and name.split('_')[0] in METHODS
    return NAME.fullmatch(name) is not None


def test_the_method_folders_are_found():
    assert {'adclr', 'cotap', 'dino', 'dsc', 'ibot', 'slotcon'} <= set(METHODS)


@pytest.mark.parametrize('path', CONFIGS, ids=rel)
def test_every_config_name_follows_the_scheme(path):
    assert name_follows_scheme(path), (
        f'{rel(path)}: the name is not <backbone>_<data>[-<schedule>][_<variant>] '
        '(configs/README.md, naming scheme)')


@pytest.mark.parametrize('name, follows', [
    ('vit-s_coco', True),  # the path users run: configs/cotap/vit-s_coco.py
    ('vit-s_coco-in1k', True),
    ('vit-ti_toy-30e', True),
    ('vit-s8_in1k', True),
    ('r50_coco-800e_pm', True),
    ('vit-s_in1k_cls-queries', True),
    ('vit-s16_coco', False),  # patch 16 is implicit
    ('r50_coco-800e-pm', False),  # a variant follows '_'
    ('r18_toy-pm', False),  # 'pm' is no dataset
    ('coco_vit-s', False),
    ('vit-s_imagenet', False),
])
def test_the_scheme_tells_good_names_from_bad(name, follows):
    assert (NAME.fullmatch(name) is not None) == follows


def test_no_two_configs_hold_the_same_recipe():
    # no config reads its own file name ({{ fileBasename }}), so equal dicts are equal recipes
    by_recipe = {}
    for path in CONFIGS:
        recipe = json.dumps(Config.fromfile(path).to_dict(), sort_keys=True, default=repr)
        by_recipe.setdefault(recipe, []).append(rel(path))
    assert [paths for paths in by_recipe.values() if len(paths) > 1] == []


@pytest.mark.parametrize('old, new', sorted(RENAMED_CONFIGS.items()))
def test_an_old_name_points_at_one_named_config_until_its_removal(old, new):
    assert not osp.exists(osp.join(ROOT, 'configs', old)), f'configs/{old} is still a file'
    target = osp.join(ROOT, 'configs', new)
    assert osp.isfile(target), f'configs/{old} → configs/{new}, which does not exist'
    assert new not in RENAMED_CONFIGS, f'configs/{old} → configs/{new}, an old name itself'
    assert old.split('/')[0] == new.split('/')[0], 'a config keeps its method folder'
    assert name_follows_scheme(target), new
    assert version_info < parse_version_info(RENAMES_REMOVED_IN), (
        f'the old names were deprecated until mmdense {RENAMES_REMOVED_IN}, this is '
        f'{".".join(map(str, version_info))}: delete RENAMED_CONFIGS')


@pytest.mark.parametrize('old', sorted(RENAMED_CONFIGS))
def test_loading_an_old_name_loads_the_new_config_with_a_one_line_note(old, capsys):
    path = osp.join(ROOT, 'configs', *old.split('/'))
    new = osp.join(ROOT, 'configs', *RENAMED_CONFIGS[old].split('/'))
    cfg = load_config(path)
    assert osp.samefile(cfg.filename, new)
    assert cfg.to_dict() == Config.fromfile(new).to_dict()
    assert capsys.readouterr().err == (
        f'note: config {path} was renamed to {new}; the old name stops working in mmdense '
        f'{RENAMES_REMOVED_IN}\n')


def test_a_tool_takes_an_old_name_relative_to_the_checkout():
    result = subprocess.run(
        [sys.executable, 'tools/misc/print_config.py', 'configs/dsc/r18_toy-pm.py'], cwd=ROOT,
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'note: config configs/dsc/r18_toy-pm.py was renamed to configs/dsc/r18_toy_pm.py' \
        in result.stderr


def test_a_missing_config_that_was_never_renamed_is_still_an_error():
    with pytest.raises(FileNotFoundError, match='vit-s16_in1k_typo.py'):
        load_config(osp.join(ROOT, 'configs', 'dino', 'vit-s16_in1k_typo.py'))


def text_files():
    patterns = ['README.md', 'Makefile', 'model-index.yml', 'benchmarks/*.md', 'docs/**/*.md',
                'configs/**/*.md', 'configs/**/*.yml', 'configs/**/*.py', 'tests/**/*.py',
                'tools/**/*.py', 'tools/**/*.sh', 'mmdense/**/*.py']
    for pattern in patterns:
        yield from glob.glob(osp.join(ROOT, pattern), recursive=True)


def old_name_uses(path):
    """The old config names ``path`` uses: ``<method>/<old name>`` anywhere, and the bare old
    name in the files of that method's folder."""
    text, folder = read(path), osp.basename(osp.dirname(path))
    for old in RENAMED_CONFIGS:
        method, name = old.split('/')
        patterns = [re.escape(old)] + ([re.escape(name)] if folder == method else [])
        for pattern in patterns:
            if re.search(rf'(?<![\w.-]){pattern}', text):
                yield old


def test_only_the_rename_table_and_its_doc_name_an_old_config():
    uses = [f'{rel(path)}: {old}' for path in text_files()
            if path not in (RENAME_TABLE, RENAME_DOC, osp.abspath(__file__))
            for old in old_name_uses(path)]
    assert not uses, uses


@pytest.mark.parametrize('text, uses', [
    ('tools/train.py configs/dino/vit-s_in1k.py', ['dino/vit-s_in1k.py']),
    ('tools/train.py configs/dino/vit-s_in1k-300e.py', []),
    ('tools/train.py configs/adclr/vit-s_in1k.py', []),
    ("_base_ = '../dsc/r18_toy-pm.py'", ['dsc/r18_toy-pm.py']),
])
def test_the_reference_check_finds_old_names(tmp_path, text, uses):
    path = tmp_path / 'notes.md'
    path.write_text(text)
    assert list(old_name_uses(str(path))) == uses


def full_pipelines(cfg):
    """(key, value) of the top-level lists that are whole training pipelines (start loading)."""
    for key, value in cfg.items():
        if isinstance(value, list) and value and isinstance(value[0], dict) \
                and value[0].get('type') == 'LoadRGBImage':
            yield key, value


@pytest.mark.parametrize('path', sorted(glob.glob(f'{ROOT}/configs/_base_/pipelines/*.py')),
                         ids=osp.basename)
def test_pipeline_bases_export_their_views_as_train_pipeline(path):
    names = [key for key, _ in full_pipelines(Config.fromfile(path).to_dict())]
    assert names in ([], ['train_pipeline']), f'{rel(path)}: exports pipelines {names}'


@pytest.mark.parametrize('path', sorted(glob.glob(f'{ROOT}/configs/_base_/models/*.py')),
                         ids=osp.basename)
def test_model_bases_hold_the_model_only(path):
    keys = set(Config.fromfile(path).to_dict())
    assert keys == {'model'}, f'{rel(path)}: holds {sorted(keys - {"model"})} besides the model'
