import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    scope = {}
    with open(osp.join(HERE, 'mmdense', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(name):
    path = osp.join(HERE, 'requirements', name)
    with open(path) as f:
        return [
            line.strip() for line in f
            if line.strip() and not line.startswith('#')
        ]


setup(
    name='mmdense',
    version=read_version(),
    description='Dense self-supervised pretraining (CoTAP, ADCLR, DSC, SlotCon, '
    'DINO) for the OpenMMLab 2.x ecosystem',
    long_description=open(osp.join(HERE, 'README.md')).read()
    if osp.exists(osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests')),
    python_requires='>=3.8',
    install_requires=read_requirements('runtime.txt'),
    # pip install -e ".[lite]"      into an environment with torch + torchvision, no mmcv
    # pip install -e ".[transfer]"  adds mmdet + mmseg (needs mmcv with compiled ops)
    extras_require={
        'lite': read_requirements('lite.txt'),
        'transfer': read_requirements('transfer.txt'),
        'mim': read_requirements('mminstall.txt'),
        'tests': read_requirements('tests.txt'),
        'optional': read_requirements('optional.txt'),
    },
    license='Apache License 2.0',
    zip_safe=False,
)
