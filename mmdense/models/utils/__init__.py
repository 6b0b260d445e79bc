from .alignment import align_to_boxes
from .centering import update_center_
from .ema_teacher import EMATeacher
from .sinkhorn import sinkhorn_knopp

__all__ = [
    'EMATeacher', 'align_to_boxes', 'sinkhorn_knopp', 'update_center_'
]
from .kmeans import gathered_spherical_kmeans, spherical_kmeans  # noqa: E402

__all__ += ['gathered_spherical_kmeans', 'spherical_kmeans']
from .backbone_channels import last_output_channels  # noqa: E402

__all__ += ['last_output_channels']
from .dino_init import DINOInit  # noqa: E402

__all__ += ['DINOInit']
