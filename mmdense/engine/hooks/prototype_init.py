import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdense.models.utils import gathered_spherical_kmeans
from mmdense.registry import HOOKS
from mmdense.utils.dist import get_world_size


@HOOKS.register_module()
class PrototypeInitHook(Hook):
    """Initialise the object-aware filter's prototypes by spherical k-means, once.

    Before training, the student backbone encodes the first view of training batches until
    ``num_images`` images (over all ranks) are seen. The batches go through the model's own data
    preprocessor, as in training (the pipeline's BGR images become RGB by its ``to_rgb``, then
    the mean/std), so the prototypes are fitted to the inputs the filter will see in training
    (``tests/test_evaluation/test_model_inputs_rgb.py`` checks them against PIL-RGB images
    normalised by hand). From the tokens entering its last block,
    ``windows_per_image`` random k×k patch windows per image form a bank of (k²·D) vectors.
    Spherical k-means over the bank (gathered from all ranks, seeded by ``seed``, so every rank
    gets the same prototypes) gives M unit centroids, copied into ``prototypes`` (M, k², D).
    Skipped when the prototypes are already initialised (resumed or loaded from a CoTAP
    checkpoint). The EMA teacher copies them at its first update.
    """

    priority = 'HIGH'

    def __init__(self,
                 num_images: int = 1024,
                 windows_per_image: int = 16,
                 num_iters: int = 20,
                 seed: int = 0) -> None:
        self.num_images = num_images
        self.windows_per_image = windows_per_image
        self.num_iters = num_iters
        self.seed = seed

    @torch.no_grad()
    def window_bank(self, runner, model) -> torch.Tensor:
        backbone = model.backbone
        kernel = backbone.object_filter.kernel_size
        generator = torch.Generator().manual_seed(self.seed)
        per_rank = -(-self.num_images // get_world_size())
        bank, seen = [], 0
        was_training = backbone.training
        backbone.eval()
        try:
            for data in runner.train_dataloader:
                views = model.data_preprocessor(data, training=False)['inputs']
                images = views[0][:per_rank - seen]
                tokens, (height, width) = backbone.last_block_input(images)
                patches = tokens[:, backbone.num_extra_tokens:].transpose(1, 2)
                windows = F.unfold(patches.reshape(len(images), -1, height, width), kernel,
                                   padding=kernel // 2)  # (B, D·k², h·w)
                windows = windows.unflatten(1, (-1, kernel**2)).permute(0, 3, 2, 1)
                picks = torch.randint(height * width, (len(images), self.windows_per_image),
                                      generator=generator).to(windows.device)
                bank.append(windows[torch.arange(len(images))[:, None], picks].flatten(0, 1))
                seen += len(images)
                if seen >= per_rank:
                    break
        finally:
            backbone.train(was_training)
        return torch.cat(bank).flatten(1)

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        layer = model.backbone.object_filter
        if bool(layer.prototypes_initialised):
            runner.logger.info('PrototypeInitHook: prototypes already initialised, skipped')
            return
        bank = self.window_bank(runner, model)
        num_prototypes = layer.prototypes.shape[0]
        if bank.shape[0] * get_world_size() < num_prototypes:
            raise ValueError(f'PrototypeInitHook: {bank.shape[0]} windows for {num_prototypes} '
                             'prototypes: raise num_images or windows_per_image')
        generator = torch.Generator().manual_seed(self.seed)
        centroids, _, _ = gathered_spherical_kmeans(bank.float(), num_prototypes, self.num_iters,
                                                    generator)
        layer.prototypes.data.copy_(centroids.view_as(layer.prototypes))
        layer.prototypes_initialised.fill_(True)
        runner.logger.info(f'PrototypeInitHook: {num_prototypes} prototypes from k-means over '
                           f'{bank.shape[0] * get_world_size()} windows of '
                           f'{layer.kernel_size}x{layer.kernel_size} last-block tokens')
