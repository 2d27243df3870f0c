"""pyssl's SimCLR augmentation in a PyTorch DataLoader.

The dataset yields uint8 images; ``collate_views`` turns each batch into two augmented views in
the worker processes (the fused C++ kernel, the whole batch in one call) instead of one PIL
image at a time through torchvision transforms. Each batch's draws come from a generator seeded
by (seed, worker, batch count), so a run repeats.

    python examples/augment_dataloader.py    # about 10 s on 2 CPU cores
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from pyssl.augment import SimCLRAugment, collate_views
from pyssl.data import load_digits


class Digits(Dataset):
    """(uint8 image [3, 32, 32], label) pairs, as any image dataset returns them."""

    def __init__(self) -> None:
        self.data = load_digits("train")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        assert self.data.labels is not None
        return self.data.images[i], int(self.data.labels[i])


def main(batches: int = 6, workers: int = 2) -> list[tuple[int, ...]]:
    aug = SimCLRAugment(32, scale=(0.4, 1.0), hflip_p=0.0, blur_p=0.0)
    loader = DataLoader(
        Digits(),
        batch_size=128,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_views(aug, make_views=True, seed=0),
        generator=torch.Generator().manual_seed(0),
    )
    shapes = []
    for i, ((v1, v2), labels) in enumerate(loader):
        if i == batches:
            break
        shapes.append(tuple(v1.shape))
        print(f"batch {i}: views {tuple(v1.shape)} {v1.dtype}, mean {v1.mean():+.3f}, "
              f"labels {tuple(labels.shape)}, views differ: {not torch.equal(v1, v2)}")  # fmt: skip
    return shapes


if __name__ == "__main__":
    main()
