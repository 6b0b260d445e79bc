from .dist import (all_reduce_sum, broadcast_from_rank0, concat_all_gather, gather_with_grad,
                   get_rank, get_world_size, is_distributed)
from .host_readbacks import count_host_readbacks
from .setup_env import register_all_modules

__all__ = [
    'all_reduce_sum', 'broadcast_from_rank0', 'concat_all_gather', 'count_host_readbacks',
    'gather_with_grad', 'get_rank', 'get_world_size', 'is_distributed', 'register_all_modules'
]
