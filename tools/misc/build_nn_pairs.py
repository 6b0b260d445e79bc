"""Top-k nearest neighbours of every training image by a pretrained (teacher) backbone.

    python tools/misc/build_nn_pairs.py CONFIG CKPT --out FILE [--topk 20]

CONFIG names the training images (its ``train_dataloader.dataset``, unwrapped from dataset
wrappers); the model is built from ``--model-config`` if given, else from the model config
recorded in the checkpoint (read as plain data: config text from a checkpoint is never
executed), else from CONFIG. For CoTAP, embed with the model that wrote the checkpoint: a DINO
checkpoint imported with ``import_weights.py`` records no config, so pass the DINO config as
``--model-config``; a backbone whose object prototypes were never initialised (a DINO checkpoint
in CoTAP's model) is refused, as is a checkpoint that does not fill the whole embedding backbone
(unless ``--allow-partial``). Each image is resized to ``--img-size`` (short side) and
centre-cropped; its embedding is the backbone's CLS token (pooled map for CNNs), L2-normalised.
The images are loaded as the pretraining pipelines load them (``LoadRGBImage``: BGR) and handed
to the backbone as the model's data preprocessor would (``to_rgb``, mean, std:
``mmdense.evaluation.features.model_inputs``), so an imported DINO embeds the RGB images it was
trained on.
Similarities are computed ``--chunk-size`` query rows at a time, so memory stays
O(chunk × N), never N × N (COCO's 118k images fit). The image itself is never its own
neighbour. The JSON output is what ``NeighbourPairDataset`` reads; it is replaced atomically.
"""
import argparse
import json
import os.path as osp
import sys
import time

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text}')
    return value


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='pretraining config whose training images to pair')
    parser.add_argument('checkpoint', help='checkpoint of the embedding model')
    parser.add_argument('--out', required=True, help='output JSON file')
    parser.add_argument('--model-config', help='config of the checkpoint\'s model')
    parser.add_argument('--topk', type=positive_int, default=20)
    parser.add_argument('--img-size', type=positive_int, default=224)
    parser.add_argument('--batch-size', type=positive_int, default=64)
    parser.add_argument('--chunk-size', type=positive_int, default=1024)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--data-root', help='override the dataset data_root')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--allow-partial', action='store_true',
                        help='embed even if the checkpoint does not fill the whole backbone')
    return parser.parse_args()


def base_dataset_cfg(dataset_cfg: dict) -> dict:
    """The innermost image dataset of (possibly nested) dataset wrappers."""
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def embedding_model_config(args):
    """The config to build the embedding model from (see the module doc)."""
    from mmengine.config import Config

    from mmdense.fileio.checkpoint import read_checkpoint, stored_model_config
    from mmdense.utils.cli import load_config
    if args.model_config:
        return load_config(args.model_config)
    model = stored_model_config(read_checkpoint(args.checkpoint), args.checkpoint)
    if model is not None:
        return Config(dict(model=model))
    return load_config(args.config)


@torch.no_grad()
def embed_images(model, loader, device) -> torch.Tensor:
    """``(N, C)`` L2-normalised embeddings of the images of ``loader``: batches of 0-255
    ``inputs (B, 3, S, S)`` loaded by ``LoadRGBImage``, in its channel order (BGR)."""
    from mmdense.datasets.transforms import LoadRGBImage
    from mmdense.evaluation.features import dense_backbone, model_inputs
    backbone = dense_backbone(model)
    embeddings, done, start = [], 0, time.time()
    for batch in loader:
        images = batch['inputs'].to(device)
        out = backbone(model_inputs(model, images, channel_order=LoadRGBImage.channel_order))[-1]
        out = out.flatten(2).mean(-1) if out.dim() == 4 else out
        embeddings.append(F.normalize(out.float(), dim=1).cpu())
        done += len(images)
        print(f'\rembedded {done}/{len(loader.dataset)} images '
              f'({done / (time.time() - start):.1f} img/s)', end='', flush=True)
    print()
    return torch.cat(embeddings)


def top_k_neighbours(embeddings: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """(N, k) indices of each row's k most similar other rows, best first."""
    check_topk(k, len(embeddings))
    neighbours = []
    for start in range(0, len(embeddings), chunk_size):
        similarity = embeddings[start:start + chunk_size] @ embeddings.T
        rows = torch.arange(similarity.shape[0])
        similarity[rows, rows + start] = -float('inf')
        neighbours.append(similarity.topk(k, dim=1).indices)
    return torch.cat(neighbours)


def check_topk(k: int, num_images: int) -> None:
    from mmdense.utils.errors import UserValueError
    if not 1 <= k < num_images:
        raise UserValueError(f'--topk must lie in [1, {num_images - 1}] for {num_images} '
                             f'images, got {k}')


def main():
    args = parse_args()
    from mmengine.dataset import default_collate
    from torch.utils.data import DataLoader

    from mmdense.fileio.checkpoint import refuse_overwriting_inputs, write_atomically
    from mmdense.evaluation.features import input_normalization
    from mmdense.evaluation.runner import load_model
    from mmdense.registry import DATASETS
    from mmdense.utils.cli import load_config
    from mmdense.utils.errors import UserKeyError
    from mmdense.fileio import sha256sum

    for path in (args.config, args.checkpoint):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path} does not exist')
    refuse_overwriting_inputs({'config': args.config, 'checkpoint': args.checkpoint},
                              {'--out': args.out})
    train_dataloader = load_config(args.config).get('train_dataloader')
    if not train_dataloader or 'dataset' not in train_dataloader:
        raise UserKeyError(f'{args.config} has no train_dataloader.dataset: which images to pair?')
    dataset_cfg = dict(base_dataset_cfg(train_dataloader.dataset))
    if args.data_root:
        dataset_cfg['data_root'] = args.data_root
    dataset_cfg['pipeline'] = [
        dict(type='LoadRGBImage'),
        dict(type='ResizeEdge', scale=args.img_size, edge='short', backend='pillow',
             interpolation='bicubic'),
        dict(type='CenterCrop', crop_size=args.img_size),
        dict(type='PackInputs'),
    ]
    model = load_model(embedding_model_config(args), args.checkpoint, args.device,
                       args.allow_partial)
    dataset = DATASETS.build(dataset_cfg)
    check_topk(args.topk, len(dataset))
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                        collate_fn=default_collate)
    embeddings = embed_images(model, loader, args.device)
    neighbours = top_k_neighbours(embeddings, args.topk, args.chunk_size)
    img_dir = getattr(dataset, 'img_dir', '') or dataset.data_root
    images = [osp.relpath(dataset.get_data_info(i)['img_path'], img_dir)
              for i in range(len(dataset))]
    record = dict(config=args.config, checkpoint=args.checkpoint,
                  checkpoint_sha256=sha256sum(args.checkpoint), embedding='backbone CLS',
                  model_input=input_normalization(model)._asdict(),
                  img_size=args.img_size, topk=args.topk, images=images,
                  neighbours=neighbours.tolist())
    write_atomically(json.dumps(record).encode(), args.out)
    print(f'wrote top-{args.topk} neighbours of {len(images)} images to {args.out}')


if __name__ == '__main__':
    from mmdense.utils.cli import run_cli
    run_cli(main)
