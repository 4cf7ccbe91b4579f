"""Spec of the `denoising_vae` family: a variational autoencoder of site x species presence
matrices, trained on noisy inputs against the clean ones (seed 004).

Seed names -> spec keys: learning_rate -> optimizer.lr, num_epochs -> training.epochs,
noise_std -> noise.std, save_every -> checkpoint.every_n_epochs, val_size ->
data.split.fractions, device -> resources.accelerator; checkpoint_dir is the run directory's
`checkpoints/`, resume is the run's `--resume`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.spec.common import MAX_BATCH, MAX_EPOCHS, BaseJobSpec, Section, TrainingSpec
from core.spec.data import DataPath
from core.spec.splits import DerivedSplit, FractionsSplit

Delimiter = Literal["auto", ",", "\t", ";", "|"]


def _seed_split() -> FractionsSplit:
    """The seed's split: 80% train, 20% validation, no test set."""
    return FractionsSplit(kind="fractions", fractions=(0.8, 0.2, 0.0))


class _SpeciesData(Section):
    path: DataPath
    delimiter: Delimiter = Field(default="auto", description="auto: sniffed from the header")
    presence_threshold: Annotated[float, Field(ge=0, le=1e12)] = Field(
        default=0.0, description="a species is present where its value is above this"
    )
    min_species_observations: Annotated[int, Field(ge=0, le=10_000_000)] = Field(
        default=1, description="drop species present at fewer sites (the seed used 30 on eBird)"
    )
    split: DerivedSplit = Field(default_factory=_seed_split)

    @model_validator(mode="after")
    def _needs_validation_sites(self) -> _SpeciesData:
        if isinstance(self.split, FractionsSplit) and self.split.fractions[1] == 0:
            raise ValueError(
                "data.split.fractions needs a validation fraction above 0 (val_loss and "
                "val_masked_auc are measured on it); a test fraction of 0 is allowed"
            )
        return self


class SpeciesMatrixData(_SpeciesData):
    """A wide CSV/TSV: one row per site, one column per species (counts or cover values), an
    optional site id column (without one, sites are numbered from 1 in file order)."""

    format: Literal["species_matrix"]
    id_column: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class RecordsData(_SpeciesData):
    """A long CSV/TSV of observations (the seed's eBird checklist records): a sampling event id
    (a site), a species name and a count, where `present_value` means present but not
    counted. Counts are summed per (event, species)."""

    format: Literal["records"]
    event_column: Annotated[str, Field(min_length=1, max_length=200)] = "SAMPLING EVENT IDENTIFIER"
    species_column: Annotated[str, Field(min_length=1, max_length=200)] = "SCIENTIFIC NAME"
    count_column: Annotated[str, Field(min_length=1, max_length=200)] = "OBSERVATION COUNT"
    present_value: Annotated[str, Field(min_length=1, max_length=20)] = "X"
    max_rows: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = Field(
        default=None, description="read at most this many records (the seed's nrows)"
    )

    @model_validator(mode="after")
    def _distinct_columns(self) -> RecordsData:
        names = [self.event_column, self.species_column, self.count_column]
        if len(set(names)) < 3:
            raise ValueError(
                f"data.event_column, species_column and count_column must differ, got {names}"
            )
        return self


SpeciesData = Annotated[SpeciesMatrixData | RecordsData, Field(discriminator="format")]


class VaeModelSpec(Section):
    """Encoder: `hidden_layers` Linear layers of `hidden_dim` (activation after each), then the
    latent mean and log-variance layers; decoder: the mirror image, ending in one logit per
    species. The seed's sizes are hidden 512 x 3, latent 16."""

    hidden_dim: Annotated[int, Field(ge=1, le=16384)] = 512
    hidden_layers: Annotated[int, Field(ge=1, le=16)] = 3
    latent_dim: Annotated[int, Field(ge=1, le=4096)] = 16
    activation: Literal["relu", "leaky_relu", "elu", "gelu", "silu", "tanh"] = "relu"


class GaussianNoise(Section):
    """Gaussian noise of `std` added to the training input (the seed's noise_std; 0 = a plain
    VAE)."""

    kind: Literal["gaussian"]
    std: Annotated[float, Field(ge=0, le=10)] = 0.1


class MaskingNoise(Section):
    """Each training input cell set to 0 with probability `rate` (hidden presences)."""

    kind: Literal["masking"]
    rate: Annotated[float, Field(ge=0, lt=1)] = 0.2


NoiseSpec = Annotated[GaussianNoise | MaskingNoise, Field(discriminator="kind")]


class QualitySpec(Section):
    """The masked-presence metric: in every evaluated site a fixed, seeded `masked_fraction` of
    its presences is hidden (set to 0 in the input); AUC of the reconstruction over every 0 of
    the masked input (`val_masked_auc`, `test_masked_auc`), beside the species-frequency
    baseline on the same masks."""

    masked_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = Field(
        default=None, description="default: training.seed"
    )


class VaeTrainingSpec(TrainingSpec):
    """The shared loop's settings with the seed's defaults (50 epochs, batches of 128 sites)."""

    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 50
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH, description="sites per global batch")] = (
        128
    )


class DenoisingVaeSpec(BaseJobSpec):
    family: Literal["denoising_vae"]
    data: SpeciesData
    model: VaeModelSpec = Field(default_factory=VaeModelSpec)
    noise: NoiseSpec = Field(default_factory=lambda: GaussianNoise(kind="gaussian"))
    kl_weight: Annotated[float, Field(ge=0, le=1000)] = Field(
        default=1.0, description="loss = recon + kl_weight x KL"
    )
    kl_anneal_steps: Annotated[int, Field(ge=0, le=100_000_000)] = Field(
        default=0,
        description="raise the KL weight linearly from 0 to kl_weight over this many optimizer "
        "steps (0: the full weight from the first step)",
    )
    quality: QualitySpec = Field(default_factory=QualitySpec)
    training: VaeTrainingSpec = Field(default_factory=VaeTrainingSpec)


__all__ = [
    "DenoisingVaeSpec",
    "GaussianNoise",
    "MaskingNoise",
    "QualitySpec",
    "RecordsData",
    "SpeciesData",
    "SpeciesMatrixData",
    "VaeModelSpec",
]
