"""The variational autoencoder of the seed (`VariationalAutoencoder`): MLP encoder and decoder,
the reparameterisation trick, and the objective it owns (`loss`).

Layer layout (the seed's 1,554,931 parameters for 467 species, hidden 512 x 3, latent 16):
encoder `in -> hidden` then `hidden_layers - 1` times `hidden -> hidden`, each followed by the
activation; `latent_mean_layer` and `latent_log_variance_layer` `hidden -> latent`; decoder
`latent -> hidden`, `hidden_layers - 1` times `hidden -> hidden` (activation after each), then
`hidden -> in` (logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers through `sizes`, the activation after each."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class VariationalAutoencoder(nn.Module):
    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 512,
        hidden_layers: int = 3,
        latent_dim: int = 16,
        activation: str = "relu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}"
            )
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.encoder_network = _mlp([input_dim] + [hidden_dim] * hidden_layers, activation)
        self.latent_mean_layer = nn.Linear(hidden_dim, latent_dim)
        self.latent_log_variance_layer = nn.Linear(hidden_dim, latent_dim)
        self.decoder_network = nn.Sequential(
            *_mlp([latent_dim] + [hidden_dim] * hidden_layers, activation),
            nn.Linear(hidden_dim, input_dim),
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Latent mean and log-variance [sites, latent] of inputs [sites, species]."""
        h = self.encoder_network(x)
        return self.latent_mean_layer(h), self.latent_log_variance_layer(h)

    def decode(self, z: Tensor) -> Tensor:
        """Logits [sites, species] of latent codes [sites, latent]."""
        return self.decoder_network(z)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """`(logits, mean, log_variance)`. Training samples z = mean + eps * std (`eps` drawn
        here when not given); evaluation decodes the mean."""
        mean, log_var = self.encode(x)
        if self.training:
            if eps is None:
                eps = torch.randn_like(mean)
            z = mean + eps * torch.exp(0.5 * log_var)
        else:
            z = mean
        return self.decode(z), mean, log_var

    @staticmethod
    def loss(
        logits: Tensor, target: Tensor, mean: Tensor, log_var: Tensor, kl_weight: float = 1.0
    ) -> dict[str, Tensor]:
        """`{"loss", "recon_loss", "kl_loss"}`: binary cross-entropy summed over species and
        KL(q(z|x) || N(0, I)) summed over latent dimensions, each the mean over sites;
        loss = recon + kl_weight x KL."""
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1).mean()
        kl = (-0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(1)).mean()
        return {"loss": recon + kl_weight * kl, "recon_loss": recon, "kl_loss": kl}


__all__ = ["ACTIVATIONS", "VariationalAutoencoder"]
