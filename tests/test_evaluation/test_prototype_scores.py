"""mmdense.evaluation.prototypes: SlotCon's prototype maps scored one-to-one and many-to-one."""
import pytest
import torch

from mmdense.evaluation.protocols import majority_mapping
from mmdense.evaluation.prototypes import prototype_scores

CELL = 4  # label pixels per feature cell side


class FakeSlotCon(torch.nn.Module):
    """A SlotCon whose teacher picks, per feature cell, the prototype written in ``val_grid`` for
    dark images (0) and in ``train_grid`` for bright ones (255)."""

    def __init__(self, val_grid, train_grid, num_prototypes):
        super().__init__()
        self.val_grid, self.train_grid = val_grid, train_grid
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.head = torch.nn.Module()
        self.head.num_prototypes = num_prototypes
        self.teacher = None

    def encode_view(self, modules, view):
        grid = self.train_grid if view.mean() > 0 else self.val_grid
        winners = grid[:len(view)]
        scores = torch.nn.functional.one_hot(winners, self.head.num_prototypes)
        return None, scores.permute(0, 3, 1, 2).float()


def split(label_grid, value):
    labels = label_grid.repeat_interleave(CELL, 1).repeat_interleave(CELL, 2)
    images = torch.full((len(labels), 3) + labels.shape[-2:], value, dtype=torch.uint8)
    return dict(images=images, labels=labels)


# val: 2 images of 2 x 2 cells; class 0 on prototypes 4 (1 cell) and 5 (2 cells), class 1 on
# prototype 3 (2 cells), class 2 on prototype 0 (3 cells)
VAL_LABELS = torch.tensor([[[0, 1], [2, 0]], [[0, 2], [2, 1]]])
VAL_PROTOTYPES = torch.tensor([[[4, 3], [0, 5]], [[5, 0], [0, 3]]])


def test_majority_maps_every_prototype_to_its_class_where_hungarian_drops_one():
    model = FakeSlotCon(VAL_PROTOTYPES, VAL_PROTOTYPES, num_prototypes=6)
    scores = prototype_scores(model, split(VAL_LABELS, 255), split(VAL_LABELS, 0),
                              num_classes=3, channel_order='rgb')
    # many-to-one: prototypes 4 and 5 both become class 0, every pixel is right
    assert scores['majority']['mIoU'] == pytest.approx(1.0)
    assert scores['majority']['pAcc'] == pytest.approx(1.0)
    # one-to-one: class 0 keeps prototype 5 (2 of its 3 cells); prototype 4's cell is missed
    assert scores['hungarian']['mIoU'] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert scores['hungarian']['pAcc'] == pytest.approx(7 / 8)


def test_majority_labels_come_from_the_train_images():
    # on the train image prototype 4 covers a class-1 cell: on val its class-0 cell is wrong
    train_labels = torch.tensor([[[0, 1], [2, 1]]])
    train_prototypes = torch.tensor([[[5, 3], [0, 4]]])
    model = FakeSlotCon(VAL_PROTOTYPES, train_prototypes, num_prototypes=6)
    scores = prototype_scores(model, split(train_labels, 255), split(VAL_LABELS, 0),
                              num_classes=3, channel_order='rgb')
    # val confusion (cells): class 0 → 0: 2, → 1: 1; class 1 → 1: 2; class 2 → 2: 3
    assert scores['majority']['mIoU'] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert scores['majority']['pAcc'] == pytest.approx(7 / 8)
    # the Hungarian matching is made on val alone, as before
    assert scores['hungarian']['mIoU'] == pytest.approx((2 / 3 + 1 + 1) / 3)


def test_a_prototype_no_train_pixel_took_has_no_class():
    counts = torch.tensor([[2, 0, 1], [1, 0, 0]])  # classes × prototypes
    assert majority_mapping(counts).tolist() == [0, -1, 0]
    # its val pixels count as missed
    train_labels = torch.tensor([[[0, 1], [2, 0]]])
    train_prototypes = torch.tensor([[[4, 3], [0, 4]]])  # prototype 5 never wins on train
    model = FakeSlotCon(VAL_PROTOTYPES, train_prototypes, num_prototypes=6)
    scores = prototype_scores(model, split(train_labels, 255), split(VAL_LABELS, 0),
                              num_classes=3, channel_order='rgb')
    # class 0: 1 cell right (prototype 4), 2 missed (prototype 5); classes 1, 2 all right
    assert scores['majority']['mIoU'] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert scores['majority']['pAcc'] == pytest.approx(6 / 8)
