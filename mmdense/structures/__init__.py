"""Data structures and geometry shared by ``mmdense.datasets`` and ``mmdense.models``."""
from .crop_geometry import intersection_area, overlap_in_views

__all__ = ['intersection_area', 'overlap_in_views']
