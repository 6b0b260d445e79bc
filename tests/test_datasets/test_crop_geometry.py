import itertools

import numpy as np
import pytest
import torch

from mmdense.models.utils.alignment import align_to_boxes
from mmdense.structures import intersection_area, overlap_in_views

HEIGHT, WIDTH = 48, 64
# Each pixel holds its own index, so a crop's content tells where it came from.
PIXEL_IDS = np.arange(HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)
BOX_PAIRS = [
    ((4, 2, 36, 30), (20, 10, 60, 46)),   # partial overlap
    ((0, 0, 64, 48), (10, 6, 30, 40)),    # b inside a
    ((30, 5, 50, 45), (5, 20, 45, 30)),   # cross-shaped overlap
    ((7, 9, 41, 33), (7, 9, 41, 33)),     # identical crops
]
FLIP_COMBOS = list(itertools.product([False, True], repeat=2))


def _crop_view(box, flip):
    x1, y1, x2, y2 = box
    view = PIXEL_IDS[y1:y2, x1:x2]
    return view[:, ::-1] if flip else view


def _cases():
    """All box pairs under all four flip combinations, as batched tensors."""
    rows = [(a, fa, b, fb) for a, b in BOX_PAIRS for fa, fb in FLIP_COMBOS]
    boxes_a, flips_a, boxes_b, flips_b = zip(*rows)
    return (rows, torch.tensor(boxes_a, dtype=torch.float32), torch.tensor(flips_a),
            torch.tensor(boxes_b, dtype=torch.float32), torch.tensor(flips_b))


def _region(box_a, box_b):
    return (max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]),
            min(box_a[3], box_b[3]))


def _select(view, box_norm, flip):
    """Pixels of ``view`` inside a normalised box, returned in original orientation."""
    height, width = view.shape
    scaled = box_norm * np.array([width, height, width, height])
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-4)
    x1, y1, x2, y2 = np.round(scaled).astype(int)
    selected = view[y1:y2, x1:x2]
    return selected[:, ::-1] if flip else selected


def test_intersection_area():
    assert intersection_area(np.array([0, 0, 10, 10]), np.array([5, 5, 20, 20])) == 25
    assert intersection_area(np.array([0, 0, 10, 10]), np.array([10, 0, 20, 10])) == 0  # touching
    assert intersection_area(np.array([0, 0, 10, 10]), np.array([2, 12, 8, 20])) == 0


def test_overlap_selects_shared_pixels():
    rows, boxes_a, flips_a, boxes_b, flips_b = _cases()
    overlap_a, overlap_b, valid = overlap_in_views(boxes_a, flips_a, boxes_b, flips_b)
    assert valid.all()
    for overlap in (overlap_a, overlap_b):
        assert ((overlap >= 0) & (overlap <= 1)).all()
    for (box_a, flip_a, box_b, flip_b), norm_a, norm_b in zip(rows, overlap_a.numpy(),
                                                              overlap_b.numpy()):
        x1, y1, x2, y2 = _region(box_a, box_b)
        shared = PIXEL_IDS[y1:y2, x1:x2]
        np.testing.assert_array_equal(_select(_crop_view(box_a, flip_a), norm_a, flip_a), shared)
        np.testing.assert_array_equal(_select(_crop_view(box_b, flip_b), norm_b, flip_b), shared)


def test_overlap_invalid_rows():
    boxes_a = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.]])
    boxes_b = torch.tensor([[10., 0., 20., 10.], [30., 30., 40., 40.]])
    flips = torch.tensor([True, False])
    overlap_a, overlap_b, valid = overlap_in_views(boxes_a, flips, boxes_b, flips)
    assert not valid.any()
    full_view = torch.tensor([0., 0., 1., 1.]).expand(2, 4)
    assert torch.equal(overlap_a, full_view) and torch.equal(overlap_b, full_view)


def test_align_round_trip_exact_pixels():
    """Unresized crops aligned to one output pixel per image pixel recover the shared region."""
    rows, boxes_a, flips_a, boxes_b, flips_b = _cases()
    overlap_a, overlap_b, _ = overlap_in_views(boxes_a, flips_a, boxes_b, flips_b)
    for index, (box_a, flip_a, box_b, flip_b) in enumerate(rows):
        x1, y1, x2, y2 = _region(box_a, box_b)
        shared = torch.from_numpy(PIXEL_IDS[y1:y2, x1:x2].copy())
        for box, flip, overlap in ((box_a, flip_a, overlap_a), (box_b, flip_b, overlap_b)):
            view = torch.from_numpy(_crop_view(box, flip).copy())[None, None]
            aligned = align_to_boxes(view, overlap[index:index + 1], torch.tensor([flip]),
                                     out_size=(y2 - y1, x2 - x1))
            torch.testing.assert_close(aligned[0, 0], shared, rtol=0, atol=1e-3)


def _coordinate_views(boxes, flips, size):
    """Ideal resized views (B, 2, size, size) holding the original x and y of each pixel centre."""
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    xs = boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])
    xs = torch.where(flips[:, None], xs.flip(-1), xs)
    grid_x = xs[:, None, :].expand(-1, size, -1)
    grid_y = ys[:, :, None].expand(-1, -1, size)
    return torch.stack([grid_x, grid_y], dim=1)


@pytest.mark.parametrize('flip_a,flip_b', FLIP_COMBOS)
def test_align_round_trip_resized_views(flip_a, flip_b):
    """Views resized to a common size align onto the same original coordinates."""
    generator = torch.Generator().manual_seed(0)
    num, view_size, out_size = 64, 32, 8
    corner_a = torch.rand(num, 2, generator=generator) * 40
    corner_b = corner_a + torch.rand(num, 2, generator=generator) * 30
    boxes_a = torch.cat([corner_a, corner_a + 60 + torch.rand(num, 2, generator=generator) * 60], 1)
    boxes_b = torch.cat([corner_b, corner_b + 60 + torch.rand(num, 2, generator=generator) * 60], 1)
    flips_a, flips_b = torch.full((num,), flip_a), torch.full((num,), flip_b)
    overlap_a, overlap_b, valid = overlap_in_views(boxes_a, flips_a, boxes_b, flips_b)
    assert valid.all()

    aligned_a = align_to_boxes(_coordinate_views(boxes_a, flips_a, view_size), overlap_a, flips_a,
                               out_size)
    aligned_b = align_to_boxes(_coordinate_views(boxes_b, flips_b, view_size), overlap_b, flips_b,
                               out_size)
    region = torch.cat([torch.maximum(boxes_a[:, :2], boxes_b[:, :2]),
                        torch.minimum(boxes_a[:, 2:], boxes_b[:, 2:])], dim=1)
    expected = _coordinate_views(region, torch.zeros(num, dtype=torch.bool), out_size)
    # roi_align clamps samples lying within half a pixel of a map border, so the outer ring of
    # output cells is only close; inside it bilinear sampling of coordinates is exact.
    for aligned in (aligned_a, aligned_b):
        torch.testing.assert_close(aligned[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=0,
                                   atol=1e-3)
        torch.testing.assert_close(aligned, expected, rtol=0, atol=0.5)


def test_align_identity_and_flip():
    maps = torch.randn(3, 4, 5, 7)
    full = torch.tensor([[0., 0., 1., 1.]]).expand(3, 4)
    flips = torch.tensor([False, True, False])
    not_flipped = align_to_boxes(maps, full, torch.zeros(3, dtype=torch.bool), out_size=(5, 7))
    torch.testing.assert_close(not_flipped, maps)
    unflipped = align_to_boxes(maps, full, flips, out_size=(5, 7))
    torch.testing.assert_close(unflipped[1], maps[1].flip(-1))
    torch.testing.assert_close(unflipped[[0, 2]], maps[[0, 2]])
