"""Every published checkpoint format of the methods' starting points imports, weights-only.

The files are written by ``official_checkpoints.py`` with the pickle structure of the official
training scripts (their ``args`` namespaces with paths, optimizer states with numpy floats, DDP
``module.`` prefixes, numpy 1.x and 2.x pickles). The reference for the imported features is the
very module whose weights were saved (the timm-layout ViT of ``helpers.py``, a torchvision
ResNet); the imported side is a plain mmpretrain backbone given the imported tensors with
``load_state_dict(strict=True)``.
"""
import os
import os.path as osp
import pathlib
import zipfile

import numpy as np
import pytest
import torch
from helpers import IMG, VIT_ARCH, pickle_globals, run_tool, torchvision_features

import official_checkpoints as official

pytestmark = pytest.mark.usefixtures('one_thread')

# the file the official code writes → (its writer, the --from that reads it, branches in it)
FORMATS = {
    'dino-vit-launch-numpy2': (lambda d: official.dino_training_checkpoint(d), 'dino'),
    'dino-vit-launch-numpy1': (
        lambda d: official.dino_training_checkpoint(d, numpy_version=1), 'dino'),
    'dino-vit-submitit-numpy2': (
        lambda d: official.dino_training_checkpoint(d, launcher='submitit'), 'dino'),
    'dino-vit-submitit-numpy1': (lambda d: official.dino_training_checkpoint(
        d, launcher='submitit', numpy_version=1), 'dino'),
    'dino-resnet-launch-numpy1': (lambda d: official.dino_training_checkpoint(
        d, arch='resnet18', numpy_version=1), 'dino'),
    'dino-vit-backbone': (lambda d: official.dino_backbone_release(d), 'dino'),
    'dino-resnet-backbone': (lambda d: official.dino_backbone_release(d, 'resnet18'), 'dino'),
    'ibot-vit-numpy1': (lambda d: official.ibot_training_checkpoint(d, numpy_version=1), 'ibot'),
    'ibot-vit-numpy2': (lambda d: official.ibot_training_checkpoint(d), 'ibot'),
    'ibot-teacher-backbone': (lambda d: official.ibot_backbone_release(d), 'ibot'),
    'ibot-student-backbone': (lambda d: official.ibot_backbone_release(d, 'student'), 'ibot'),
    'slotcon-training': (lambda d: official.slotcon_training_checkpoint(d), 'slotcon'),
    'slotcon-convert_pretrain_to_mm': (lambda d: official.slotcon_converted(
        official.slotcon_training_checkpoint(d), d), 'slotcon'),
    'torchvision': (lambda d: official.torchvision_state_dict(d), 'torchvision'),
    'timm': (lambda d: official.timm_state_dict(d), 'timm'),
}
IMPORTED_PREFIXES = {'teacher': 'teacher.module.backbone.', 'student': 'backbone.'}


@pytest.fixture(scope='module')
def image():
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))


def written(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    return FORMATS[name][0](str(folder))


def imported_backbone(state_dict, reference):
    """A plain mmpretrain backbone of the reference's architecture holding ``state_dict``."""
    from mmpretrain.models import ResNet, VisionTransformer
    if isinstance(reference, official.TimmLayoutViT):
        model = VisionTransformer(arch=VIT_ARCH, img_size=IMG, out_type='raw')
    else:
        model = ResNet(depth=18, out_indices=(0, 1, 2, 3))
    model.load_state_dict(state_dict, strict=True)
    model.eval()  # mmpretrain backbones' train() returns None
    return model


def max_feature_difference(backbone, reference, image):
    """max |imported − reference| over the final-norm tokens of a ViT, the four stage outputs of
    a ResNet."""
    with torch.no_grad():
        if isinstance(reference, official.TimmLayoutViT):
            pairs = [(backbone(image)[0], reference(image))]
        else:
            pairs = zip(backbone(image), torchvision_features(reference, image))
        return max((out - ref).abs().max().item() for out, ref in pairs)


@pytest.mark.parametrize('name', list(FORMATS))
def test_published_format_imports_with_the_features_of_its_backbones(name, tmp_path, image):
    from mmdense.transfer import import_published
    published = written(tmp_path, name)
    assert zipfile.is_zipfile(published.path)  # torch >= 1.6 wrote zip files
    out = str(tmp_path / 'imported.pth')
    meta = import_published(published.path, out, FORMATS[name][1])
    assert meta['source_branches'] == sorted(published.backbones)
    state_dict = torch.load(out, weights_only=True)['state_dict']
    for branch, reference in published.backbones.items():
        prefix = IMPORTED_PREFIXES[branch]
        weights = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        difference = max_feature_difference(imported_backbone(weights, reference), reference,
                                            image)
        assert difference <= 1e-5, f'{name} {branch}: features differ by {difference}'
    assert not any(k.startswith(('blocks.', 'layer1.')) for k in meta['dropped_keys'])


def test_fixtures_have_the_pickle_structure_of_the_official_scripts(tmp_path):
    """The bytes name what the official scripts' pickles name: the numpy 1.x or 2.x scalar
    constructor, ``argparse.Namespace``, a ``pathlib.PosixPath`` under submitit."""
    numpy1 = pickle_globals(official.dino_training_checkpoint(
        str(tmp_path), launcher='submitit', numpy_version=1).path)
    numpy2 = pickle_globals(official.dino_training_checkpoint(str(tmp_path)).path)
    assert {'numpy.core.multiarray.scalar', 'pathlib.PosixPath', 'argparse.Namespace'} <= numpy1
    assert 'numpy._core.multiarray.scalar' not in numpy1
    assert 'numpy._core.multiarray.scalar' in numpy2 and 'pathlib.PosixPath' not in numpy2


def test_training_checkpoint_reads_back_with_its_args_and_numpy_learning_rates(tmp_path):
    from mmdense.fileio.checkpoint import read_checkpoint
    path = official.dino_training_checkpoint(str(tmp_path), launcher='submitit',
                                             numpy_version=1).path
    checkpoint = read_checkpoint(path)
    assert checkpoint['args'].output_dir == pathlib.PosixPath('/checkpoint/user/experiments/'
                                                              '51234567')
    assert checkpoint['args'].global_crops_scale == (0.4, 1.0)
    groups = checkpoint['optimizer']['param_groups']
    schedule = official.cosine_schedule(5e-4, 1e-6, warmup=4)
    assert type(groups[0]['lr']) is np.float64 and groups[0]['lr'] == schedule[7]
    assert type(groups[0]['weight_decay']) is np.float64 and groups[1]['weight_decay'] == 0.
    assert set(checkpoint) == {'student', 'teacher', 'optimizer', 'epoch', 'args', 'dino_loss',
                               'fp16_scaler'}


# ------------------------------------------------------------------ what the allow-list admits
def test_a_windows_path_loads_as_a_pure_path_on_posix(tmp_path):
    """``pathlib.WindowsPath`` cannot be built on POSIX; a checkpoint written on Windows names
    it, and loads with a ``PureWindowsPath`` in its place."""
    from mmdense.fileio.checkpoint import read_checkpoint
    if os.name == 'nt':
        pytest.skip('the stand-in is for POSIX systems')
    path = official.save({'args': pathlib.PureWindowsPath('C:/runs/dino')},
                         tmp_path / 'windows.pth',
                         renames={pathlib.PureWindowsPath: 'pathlib.WindowsPath'})
    assert 'pathlib.WindowsPath' in pickle_globals(path)
    assert read_checkpoint(path)['args'] == pathlib.PureWindowsPath('C:/runs/dino')


@pytest.mark.parametrize('numpy_version', [1, 2])
def test_numpy_arrays_of_either_numpy_load(tmp_path, numpy_version):
    """An mmengine message-hub history (a float64 array) pickled under numpy 1.x or 2.x."""
    from mmdense.fileio.checkpoint import read_checkpoint
    history = np.array([0.5, 0.25, 0.125])
    path = official.save({'meta': {'history': history, 'seed': np.int64(7)}},
                         tmp_path / 'hub.pth', numpy_version)
    numpy_module = 'numpy.core' if numpy_version == 1 else 'numpy._core'
    assert f'{numpy_module}.multiarray._reconstruct' in pickle_globals(path)
    meta = read_checkpoint(path)['meta']
    np.testing.assert_array_equal(meta['history'], history)
    assert meta['seed'] == 7


# --------------------------------------------------------------------- what it still refuses
class Payload:
    """Unpickling this runs ``os.makedirs(marker)``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker, ))


class PartialPayload(Payload):

    def __reduce__(self):
        import functools
        return (functools.partial(os.makedirs, self.marker), ())


@pytest.mark.parametrize('payload, refused', [(Payload, 'os.makedirs'),
                                              (PartialPayload, 'functools.partial')])
def test_code_in_a_training_checkpoint_is_refused_in_one_line(tmp_path, payload, refused):
    from mmdense.fileio.checkpoint import UnsafeCheckpointError
    from mmdense.transfer import import_published
    marker = str(tmp_path / 'payload_ran')
    published = official.dino_training_checkpoint(str(tmp_path))
    checkpoint = torch.load(published.path, weights_only=False)  # written just above
    checkpoint['args'].output_dir = payload(marker)
    torch.save(checkpoint, tmp_path / 'evil.pth')
    with pytest.raises(UnsafeCheckpointError) as error:
        import_published(str(tmp_path / 'evil.pth'), str(tmp_path / 'out.pth'), 'dino')
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith(f'{tmp_path / "evil.pth"}: refused, not a weights-only checkpoint:'
                              f' it needs the global `{refused}`')
    assert 're-save its tensors' in message
    assert not osp.exists(marker) and not osp.exists(tmp_path / 'out.pth')


@pytest.mark.parametrize('numpy_version', [1, 2])
def test_an_object_array_is_refused(tmp_path, numpy_version):
    from mmdense.fileio.checkpoint import UnsafeCheckpointError, read_checkpoint
    path = official.save({'meta': np.array([1, 'two'], dtype=object)}, tmp_path / 'objects.pth',
                         numpy_version)
    with pytest.raises(UnsafeCheckpointError, match=r"objects.pth: .*it needs the call "
                       r"`numpy.dtype\('O8', False, True\)`"):
        read_checkpoint(path)


# ---------------------------------------------------------------- a format given as another
@pytest.mark.parametrize('name, wrong, right', [
    ('torchvision', 'timm', 'torchvision'),
    ('timm', 'torchvision', 'timm'),
    ('slotcon-convert_pretrain_to_mm', 'ibot', 'torchvision'),
    ('dino-vit-launch-numpy2', 'timm', 'dino'),
])
def test_a_file_given_with_the_wrong_from_names_the_file_and_the_right_one(
        tmp_path, capsys, name, wrong, right):
    published = written(tmp_path, name)
    code = run_tool('tools/model_converters/import_weights.py', published.path,
                    tmp_path / 'out.pth', '--from', wrong)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f'error: {published.path}: ')
    assert f'import it with --from {right}' in lines[0]
    assert not osp.exists(tmp_path / 'out.pth')
