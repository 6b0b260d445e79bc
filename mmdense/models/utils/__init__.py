from .alignment import align_to_boxes
from .backbone_channels import last_output_channels
from .centering import update_center_
from .ema_teacher import EMATeacher
from .kmeans import gathered_spherical_kmeans, spherical_kmeans
from .sinkhorn import sinkhorn_knopp

__all__ = [
    'EMATeacher', 'align_to_boxes', 'gathered_spherical_kmeans', 'last_output_channels',
    'sinkhorn_knopp', 'spherical_kmeans', 'update_center_'
]
