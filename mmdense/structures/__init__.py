"""Data structures and geometry shared by ``mmdense.datasets`` and ``mmdense.models``."""
from .crop_geometry import geometric_positives, intersection_area, overlap_in_views, pixel_cells

__all__ = ['geometric_positives', 'intersection_area', 'overlap_in_views', 'pixel_cells']
