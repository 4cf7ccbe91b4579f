"""Denoising variational autoencoder of site x species presence matrices (seed 004): spec,
task, model."""

from core.families import Family
from core.families.denoising_vae.spec import DenoisingVaeSpec

FAMILY = Family("denoising_vae", DenoisingVaeSpec, "DenoisingVaeTask")
