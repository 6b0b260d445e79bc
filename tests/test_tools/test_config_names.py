"""Config names follow the scheme of configs/README.md, a renamed config keeps working under its
old name (a thin alias) until the release that removes it, and the bases keep their roles:
pipeline bases export ``train_pipeline``, model bases hold the model only."""
import glob
import os.path as osp
import re

import pytest
from mmengine.config import Config

from mmdense.version import parse_version_info, version_info
from helpers import ROOT

RENAME_TABLE = osp.join(ROOT, 'configs', 'README.md')
METHODS = ('adclr', 'cotap', 'dino', 'dsc', 'ibot', 'slotcon')

BACKBONE = r'(vit-(ti|s|b|l)(8|14|32)?|r(18|34|50|101|152))(-w\d+)?'
DATASET = r'(in1k|coco|cocoplus|toy|toy-textures)'
SCHEDULE = r'\d+[ek]'
VARIANT = r'[a-z][a-z0-9]*(-[a-z0-9]+)*'
NAME = re.compile(rf'{BACKBONE}_{DATASET}(-{DATASET})*(-{SCHEDULE})?(_{VARIANT})?')
DEMO_NAME = re.compile(rf'({"|".join(METHODS)})_{NAME.pattern}')
ALIAS = re.compile(r"# Deprecated: the old name of \./(?P<target>[\w.-]+\.py) "
                   r"\(configs/README\.md, naming scheme\),\n"
                   r"# removed in mmdense (?P<removed>[\d.]+)\.\n"
                   r"_base_ = '\./(?P=target)'\n")


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def is_alias(path):
    return read(path).startswith('# Deprecated')


def rel(path):
    return osp.relpath(path, ROOT)


CONFIGS = sorted(p for d in METHODS + ('demo', )
                 for p in glob.glob(osp.join(ROOT, 'configs', d, '*.py')))
ALIASES = [p for p in CONFIGS if is_alias(p)]
NAMED = [p for p in CONFIGS if not is_alias(p)]


def name_follows_scheme(path):
    name = osp.splitext(osp.basename(path))[0]
    scheme = DEMO_NAME if osp.basename(osp.dirname(path)) == 'demo' else NAME
    return scheme.fullmatch(name) is not None


@pytest.mark.parametrize('path', NAMED, ids=rel)
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


@pytest.mark.parametrize('path', ALIASES, ids=rel)
def test_an_alias_only_points_at_a_named_config_until_its_removal(path):
    match = ALIAS.fullmatch(read(path))
    assert match, f'{rel(path)}: an alias is the two comment lines and `_base_` only'
    target = osp.join(osp.dirname(path), match['target'])
    assert osp.isfile(target), f'{rel(path)}: {rel(target)} does not exist'
    assert not is_alias(target), f'{rel(path)}: {rel(target)} is an alias itself'
    assert name_follows_scheme(target) and not name_follows_scheme(path), rel(path)
    removed = parse_version_info(match['removed'])
    assert version_info < removed, (
        f'{rel(path)}: deprecated until mmdense {match["removed"]}, this is '
        f'{".".join(map(str, version_info))}: delete the alias')


@pytest.mark.parametrize('path', ALIASES, ids=rel)
def test_an_alias_builds_the_same_config_as_its_target(path):
    # no config reads its own file name ({{ fileBasename }}), so the whole dict must be equal
    target = osp.join(osp.dirname(path), ALIAS.match(read(path))['target'])
    assert Config.fromfile(path).to_dict() == Config.fromfile(target).to_dict()


def text_files():
    patterns = ['README.md', 'Makefile', 'benchmarks/*.md', 'docs/**/*.md', 'configs/**/*.md',
                'configs/**/*.yml', 'configs/**/*.py', 'tests/**/*.py', 'tools/**/*.py',
                'mmdense/**/*.py']
    for pattern in patterns:
        yield from glob.glob(osp.join(ROOT, pattern), recursive=True)


def test_only_the_aliases_and_the_rename_table_name_a_deprecated_config():
    old_names = {osp.basename(p) for p in ALIASES}
    name = re.compile(r'(?<![\w-])[\w.-]+\.py')
    uses = [f'{rel(path)}: {match[0]}' for path in text_files()
            if path not in ALIASES + [RENAME_TABLE] for match in name.finditer(read(path))
            if match[0] in old_names]
    assert not uses, uses


def test_the_rename_table_lists_every_alias_with_its_new_name():
    table = read(RENAME_TABLE)
    for path in ALIASES:
        method = osp.basename(osp.dirname(path))
        row = (f'| `{method}/{osp.basename(path)}` | '
               f'`{method}/{ALIAS.match(read(path))["target"]}` |')
        assert row in table, f'{rel(RENAME_TABLE)} lacks the row {row}'


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
