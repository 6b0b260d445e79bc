"""Every registered algorithm has a method record (``configs/<method>/metafile.yml``), so that
every shared per-algorithm test (resume, reliability, transfer, device moves) covers it; the
records' loader names the file and key of a bad value."""
import inspect
import os.path as osp
import textwrap

import pytest
from mmengine.config import Config
from mmpretrain.models import ResNet, VisionTransformer

import mmdense.models.algorithms  # noqa: F401 (registers the algorithms)
from algorithm_table import ALGORITHMS
from helpers import ROOT
from mmdense.models.algorithms.base import TeacherStudentSelfSupervisor
from mmdense.registry import MODELS
from mmdense.utils.method_records import RecordError, load_records

FAMILIES = dict(vit=VisionTransformer, resnet=ResNet)


def registered_algorithms():
    """Names of the teacher–student algorithms in mmdense's ``MODELS`` registry."""
    return {name for name, cls in MODELS.module_dict.items()
            if inspect.isclass(cls) and issubclass(cls, TeacherStudentSelfSupervisor)
            and cls is not TeacherStudentSelfSupervisor}


def records_match_the_registry():
    """Raise ``AssertionError`` naming every registered algorithm without a record and every
    record naming no registered algorithm."""
    registered = registered_algorithms()
    assert registered, 'found no algorithm in the MODELS registry'
    missing = registered - set(ALGORITHMS)
    assert not missing, (f'{sorted(missing)} registered but without a method record: add '
                         'configs/<method>/metafile.yml (docs/adding_a_method.md) so the '
                         'per-algorithm tests cover it')
    stale = {ALGORITHMS[name].path: name for name in set(ALGORITHMS) - registered}
    assert not stale, f'records naming no registered algorithm: {stale}'


def test_every_registered_algorithm_has_a_record():
    records_match_the_registry()


def test_a_registered_algorithm_without_a_record_fails():
    class Unrecorded(TeacherStudentSelfSupervisor):
        """A method registered with no ``configs/<method>/metafile.yml``."""

    MODELS.register_module(module=Unrecorded)
    try:
        with pytest.raises(AssertionError, match=r"\['Unrecorded'\] registered but without a "
                           r'method record: add configs/<method>/metafile.yml'):
            records_match_the_registry()
    finally:
        MODELS.module_dict.pop('Unrecorded')


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_the_record_names_its_folder_toy_config_and_backbone_family(algorithm):
    record = ALGORITHMS[algorithm]
    assert record.path == f'configs/{record.folder}/metafile.yml'
    for config in (record.toy_config, record.recipe_config):
        assert config.startswith(f'configs/{record.folder}/'), (record.path, config)
        model = Config.fromfile(osp.join(ROOT, config)).model
        assert model.type == algorithm, (config, model.type)
        assert issubclass(MODELS.get(model.backbone.type), FAMILIES[record.backbone_family]), (
            record.path, model.backbone.type, record.backbone_family)


# ----------------------------------------------------------------------------- the loader
RECORD = """\
Collections:
  - Name: NewMethod
    Metadata:
      Backbone Family: resnet
      Toy Config: configs/new/r18_toy.py
      Recipe Config: configs/new/r18_toy.py
      Tiny: {model.queue_len: 8}
      Build Errors: {Mistyped: {model: NewMethod}, Mismatched: {}}
      README Rows: [{Configs: [configs/new/r18_toy.py], Backbone: ResNet-18, Data: toy}]
Models: []
"""


def write_record(root, text=RECORD, folder='new'):
    (root / 'configs' / folder).mkdir(parents=True, exist_ok=True)
    (root / 'configs' / 'new' / 'r18_toy.py').write_text("model = dict(type='NewMethod')\n")
    (root / 'configs' / folder / 'metafile.yml').write_text(textwrap.dedent(text))


def test_a_well_formed_record_is_read(tmp_path):
    write_record(tmp_path)
    (record, ) = load_records(str(tmp_path)).values()
    assert (record.name, record.folder, record.backbone_family) == ('NewMethod', 'new', 'resnet')
    assert record.tiny == {'model.queue_len': 8} and record.step_cost is None
    assert record.readme_rows[0].method == 'NewMethod'  # the Name unless a row says otherwise


@pytest.mark.parametrize('edit,message', [
    (lambda t: t.replace('      Toy Config: configs/new/r18_toy.py\n', ''),
     r"configs/new/metafile.yml: Collections\[0\].Metadata: missing key 'Toy Config'"),
    (lambda t: t.replace('Backbone Family: resnet', 'Backbone Family: swin'),
     r"Collections\[0\].Metadata.Backbone Family: 'swin' is not one of \('vit', 'resnet'\)"),
    (lambda t: t.replace('Tiny: {model.queue_len: 8}', 'Tiny: [model.queue_len=8]'),
     r"configs/new/metafile.yml: Collections\[0\].Metadata.Tiny: expected dict, got "
     r"\['model.queue_len=8'\]"),
    (lambda t: t.replace('Recipe Config: configs/new/r18_toy.py',
                         'Recipe Config: configs/new/r50.py'),
     r'Collections\[0\].Metadata.Recipe Config: configs/new/r50.py is not a file'),
    (lambda t: t.replace('README Rows: [{Configs: [configs/new/r18_toy.py], ',
                         'README Rows: [{'),
     r"Collections\[0\].Metadata.README Rows\[0\]: missing key 'Configs'"),
])
def test_a_bad_record_names_the_file_and_key(tmp_path, edit, message):
    write_record(tmp_path, edit(RECORD))
    with pytest.raises(RecordError, match=message):
        load_records(str(tmp_path))


def test_two_records_of_one_algorithm_are_refused(tmp_path):
    write_record(tmp_path)
    write_record(tmp_path, folder='new_copy')
    with pytest.raises(RecordError, match=r"configs/new_copy/metafile.yml: Collections\[0\].Name "
                       r"'NewMethod' is already the name of configs/new/metafile.yml"):
        load_records(str(tmp_path))


def test_an_unknown_run_time_value_is_named(tmp_path):
    write_record(tmp_path, RECORD.replace('{model.queue_len: 8}',
                                          "{model.neighbours_file: '{neighbours}'}"))
    (record, ) = load_records(str(tmp_path)).values()
    with pytest.raises(RecordError, match=r"configs/new/metafile.yml: Tiny.model.neighbours_file: "
                       r"unknown run-time value '\{neighbours\}'; known: \['data_root'\]"):
        record.tiny_options(dict(data_root=lambda: 'data'))
