"""MAE's masking and loss from pyssl inside an ordinary PyTorch training loop.

The model is yours (here a tiny Transformer over 4x4 patches of the 32x32 digits); pyssl
replaces the three pieces of MAE's ``models_mae.py`` that cost memory traffic:
``random_masking`` (+ the gather of visible patches), the decoder's unshuffle with mask
tokens, and ``forward_loss`` (computed straight from the images, no patchified target).

    python examples/mae_plain_loop.py        # about 20 s on 2 CPU cores
"""

from __future__ import annotations

import torch
from torch import nn

from pyssl import ops
from pyssl.data import load_digits

P, DIM, RATIO = 4, 64, 0.75


class TinyMAE(nn.Module):
    def __init__(self, image_size: int = 32, channels: int = 3):
        super().__init__()
        n = (image_size // P) ** 2
        self.embed = nn.Linear(P * P * channels, DIM)
        self.pos = nn.Parameter(torch.randn(1, n, DIM) * 0.02)
        layer = lambda: nn.TransformerEncoderLayer(DIM, 4, 2 * DIM, batch_first=True)  # noqa: E731
        self.encoder = nn.TransformerEncoder(layer(), 2)
        self.mask_token = nn.Parameter(torch.zeros(DIM))
        self.decoder = nn.TransformerEncoder(layer(), 1)
        self.pred = nn.Linear(DIM, P * P * channels)

    def forward(self, imgs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        tokens = self.embed(ops.patchify(imgs, P)) + self.pos
        # MAE's random_masking: keep 25% of the tokens per image (noise from the generator)
        masked = ops.random_masking(tokens, RATIO, generator=generator)
        latent = self.encoder(masked.visible)
        # decoder input: mask tokens appended and the order restored, in one op
        full = ops.restore_masked(latent, self.mask_token, masked.ids_restore) + self.pos
        pred = self.pred(self.decoder(full))
        # MAE's forward_loss (norm_pix_loss) on the removed patches, straight from the images
        return ops.masked_patch_loss(pred, imgs, masked.mask, P, norm_pix=True)


def main(steps: int = 40, batch: int = 64) -> list[float]:
    torch.manual_seed(0)
    data = load_digits("train")
    images = data.images.float() / 255.0
    model = TinyMAE()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        rows = torch.randint(0, len(images), (batch,), generator=g)
        loss = model(images[rows], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step:3d}  masked-patch loss {loss.item():.4f}")
    return losses


if __name__ == "__main__":
    main()
