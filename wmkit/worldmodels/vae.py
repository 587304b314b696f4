"""V: the convolutional VAE of World Models (Ha & Schmidhuber 2018, section 2.1).

A 64x64x3 frame in [0, 1] is compressed to a latent z of 32 numbers (Kingma & Welling 2014):

    encoder  4 conv layers, kernel 4, stride 2, ReLU: 32, 64, 128, 256 channels -> (256, 2, 2) = 1024
    z        mu, log sigma^2 = two dense layers 1024 -> 32; z = mu + sigma * eps   (reparameterisation)
    decoder  dense 32 -> 1024 (seen as 1024x1x1), 4 transposed convs, stride 2:
             128 (k5), 64 (k5), 32 (k6) with ReLU, 3 (k6) with a sigmoid -> 64x64x3

Loss (the paper's code): L2 reconstruction summed over pixels + KL(q(z|x) || N(0, I)), where each
frame's KL is not pushed below ``kl_tolerance * z_dim`` nats (a "free bits" floor: the paper uses 0.5
per latent dimension, i.e. 16 nats for z = 32, 32 nats for Doom's z = 64). The floor applies per frame,
before the batch mean (``kl = max(kl, kl_tolerance * z_size)`` then ``reduce_mean`` in the paper's code),
so a frame already below the floor gets no KL gradient while the others of the batch still do.
With these sizes the parameter count is 4,348,547 (a test checks it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvVAE(nn.Module):
    """The paper's V. ``forward(x)`` -> (reconstruction, mu, logvar); ``encode``/``decode`` for use."""

    def __init__(self, z_dim: int = 32, kl_tolerance: float = 0.5):
        super().__init__()
        self.z_dim, self.kl_tolerance = z_dim, kl_tolerance
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2), nn.ReLU(),     # (B, 32, 31, 31)
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),    # (B, 64, 14, 14)
            nn.Conv2d(64, 128, 4, stride=2), nn.ReLU(),   # (B, 128, 6, 6)
            nn.Conv2d(128, 256, 4, stride=2), nn.ReLU(),  # (B, 256, 2, 2)
            nn.Flatten(),                                 # (B, 1024)
        )
        self.fc_mu = nn.Linear(1024, z_dim)
        self.fc_logvar = nn.Linear(1024, z_dim)
        self.fc_dec = nn.Linear(z_dim, 1024)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(1024, 128, 5, stride=2), nn.ReLU(),  # (B, 128, 5, 5)
            nn.ConvTranspose2d(128, 64, 5, stride=2), nn.ReLU(),    # (B, 64, 13, 13)
            nn.ConvTranspose2d(64, 32, 6, stride=2), nn.ReLU(),     # (B, 32, 30, 30)
            nn.ConvTranspose2d(32, 3, 6, stride=2), nn.Sigmoid(),   # (B, 3, 64, 64)
        )

    @staticmethod
    def _check_input(x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, 64, 64):
            raise ValueError(f"ConvVAE expects frames of shape (B, 3, 64, 64), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"ConvVAE expects float frames in [0, 1], got dtype {x.dtype} "
                             "(convert uint8 frames with wmkit.worldmodels.frames_to_tensor)")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 64, 64) in [0, 1] -> mu, logvar, each (B, Z)."""
        self._check_input(x)
        h = self.encoder(x)  # (B, 1024)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Z) -> (B, 3, 64, 64) in [0, 1]."""
        h = self.fc_dec(z)[:, :, None, None]  # (B, 1024, 1, 1)
        return self.decoder(h)

    # [eq:reparam]
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)                                 # (B, Z) each
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)    # z ~ N(mu, sigma^2)
        return self.decode(z), mu, logvar
    # [/eq:reparam]

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The paper's VAE loss on a batch: {'loss', 'recon', 'kl', 'mse'} (batch means)."""
        recon, mu, logvar = self(x)
        # [eq:elbo]
        r_loss = (recon - x).pow(2).sum(dim=(1, 2, 3)).mean()                     # L2, summed over pixels
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)          # (B,) KL(q(z|x) || N(0, I))
        kl_floor = torch.as_tensor(self.kl_tolerance * self.z_dim, dtype=kl.dtype)
        kl_loss = torch.maximum(kl, kl_floor).mean()    # free bits per frame, THEN the batch mean
        loss = r_loss + kl_loss                         # a frame below the floor gets no KL gradient
        # [/eq:elbo]
        return {"loss": loss, "recon": r_loss, "kl": kl.mean(), "kl_loss": kl_loss, "mse": F.mse_loss(recon, x)}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction through the posterior mean (what the notebook shows)."""
        mu, _ = self.encode(x)
        return self.decode(mu)
