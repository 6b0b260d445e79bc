from .dino_loss import DINOLoss, multicrop_cross_entropy

__all__ = ['DINOLoss', 'multicrop_cross_entropy']
