"""Denoising VAE of site x species presence matrices (seed 004).

Data: a species matrix (wide table) or observation records (long table), binarised and split
by sites. Training: each epoch shuffles the training sites with a generator seeded by (seed,
epoch); the input noise (Gaussian or masking) and the reparameterisation draws of global batch
k come from a generator seeded by (seed, epoch, k), and each DDP rank takes its rows of them, so
two ranks train like one process and a resumed run equals an uninterrupted one. The target is
the clean input; evaluation adds no noise and decodes the latent mean.

Quality: masked presences. A fixed, seeded fraction of every site's presences is hidden (set
to 0 in the input); the AUC of the reconstruction over every 0 of the masked input
(`<split>_masked_auc`), against the species-frequency baseline (training-site prevalence) on
the same cells.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.functional.classification import binary_auroc

from core import distributed as D
from core.data.errors import DataWarnings
from core.data.species import SpeciesMatrix, from_records, from_table, species_matrix
from core.data.splits import SPLITS, split_indices
from core.data.tables import read_columns, read_table
from core.families.denoising_vae.model import VariationalAutoencoder
from core.families.denoising_vae.spec import (
    DenoisingVaeSpec,
    GaussianNoise,
    RecordsData,
    SpeciesData,
)
from core.modelinfo import count_parameters
from core.plots import training_curves
from core.task import Output, RunContext, Task, embeddings_outputs

log = logging.getLogger(__name__)

EVAL_CHUNK = 8192  # sites per evaluation forward pass
LOSS_PARTS = ("recon_loss", "kl_loss")


def load_species(data: SpeciesData) -> SpeciesMatrix:
    """The spec's presence matrix (rare species dropped); errors name file, line, column."""
    warnings = DataWarnings()
    if isinstance(data, RecordsData):
        names = [data.event_column, data.species_column, data.count_column]
        records = read_columns(
            data.path,
            names,
            None if data.delimiter == "auto" else data.delimiter,
            data.max_rows,
            roles=["event", "species", "count"],
        )
        if records.truncated:
            warnings.add(data.path, f"read the first {data.max_rows} records (data.max_rows)")
        site_ids, species, presence = from_records(
            records, *names, data.present_value, data.presence_threshold
        )
    else:
        table = read_table(
            data.path,
            data.id_column,
            None if data.delimiter == "auto" else data.delimiter,
            nonnegative=True,
            allowed="counts or cover values >= 0",
        )
        site_ids = table.ids
        species, presence = from_table(table, data.presence_threshold)
    return species_matrix(
        data.path, site_ids, species, presence, data.min_species_observations, warnings
    )


def _seed(*parts: int) -> int:
    """A distinct, reproducible generator seed per tuple of integers (run seed, epoch, ...)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part + 7_919) % (2**63 - 1)
    return value


def hide_presences(presence: Tensor, fraction: float, seed: int) -> Tensor:
    """bool [sites, species]: in each site, round(fraction x presences) of its presences picked
    at random (seeded), the rest False."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand(presence.shape, generator=gen)
    keys[presence == 0] = 2.0  # absences sort after every presence
    rank = keys.argsort(1).argsort(1)  # [sites, species] each cell's rank within its site
    count = torch.floor(presence.sum(1, keepdim=True) * fraction + 0.5)  # [sites, 1]
    return (presence > 0) & (rank < count)


def masked_auc(scores: Tensor, hidden: Tensor, candidates: Tensor) -> float:
    """AUC of `scores` [sites, species] over the `candidates` cells (every 0 of the masked
    input), the `hidden` presences being the positives; NaN without both kinds of cell."""
    target = hidden[candidates]
    if target.numel() == 0 or bool(target.all()) or not bool(target.any()):
        return float("nan")
    return float(binary_auroc(scores[candidates].float(), target.long()))


class DenoisingVaeTask(Task):
    spec: DenoisingVaeSpec

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.matrix: SpeciesMatrix | None = None
        self.index: dict[str, Tensor] = {}
        self.x = torch.empty(0)  # [sites, species] clean presences, on the device
        self.hidden = torch.empty(0, dtype=torch.bool)  # [sites, species] masked presences
        self.masked = torch.empty(0)  # [sites, species] the input with those hidden
        self.train_prevalence = torch.empty(0)  # [species] the frequency baseline's scores
        self.baseline: dict[str, float] = {}
        self.results: dict[str, dict[str, float]] = {}  # split -> its last metrics

    # --- data and model ---------------------------------------------------------------------------

    def setup_data(self) -> None:
        spec = self.spec
        matrix = load_species(spec.data)
        sites = matrix.presence.shape[0]
        self.index = split_indices({}, sites, spec.data.split, spec.training.seed)
        for name in ("train", "val"):
            if self.index[name].numel() == 0:
                raise ValueError(
                    f"the {name} split is empty: {sites} sites in {matrix.file} with data.split "
                    f"{spec.data.split.model_dump()}; use larger fractions or fewer folds"
                )
        if self.index["test"].numel() == 0:
            log.info("no test sites: test metrics are skipped")
        x = torch.from_numpy(matrix.presence)  # [sites, species] in {0, 1}
        seed = spec.quality.seed if spec.quality.seed is not None else spec.training.seed
        # (seed, 0, 0): epoch 0 is no training epoch, so no shuffle or noise shares the stream.
        hidden = hide_presences(x, spec.quality.masked_fraction, _seed(seed, 0, 0))
        masked = x.masked_fill(hidden, 0.0)
        self.train_prevalence = x[self.index["train"]].mean(0)  # [species]
        for name, idx in self.index.items():
            if idx.numel():
                scores = self.train_prevalence.expand(idx.numel(), -1)
                self.baseline[name] = masked_auc(scores, hidden[idx], masked[idx] == 0)
        device = self.ctx.device
        self.matrix = matrix
        self.x, self.hidden, self.masked = x.to(device), hidden.to(device), masked.to(device)

    def build_model(self) -> nn.Module:
        assert self.matrix is not None, "setup_data first"
        model = VariationalAutoencoder(self.x.size(1), **self.spec.model.model_dump())
        log.info(
            "denoising_vae: %d sites (train %d, val %d, test %d) x %d species, %d parameters",
            self.x.size(0),
            *(int(self.index[s].numel()) for s in SPLITS),
            self.x.size(1),
            count_parameters(model),
        )
        return model.to(self.ctx.device)

    # --- training -------------------------------------------------------------------------------

    def per_rank_batch_size(self) -> int:
        """`training.batch_size` is the global batch: each rank takes its share."""
        size = self.spec.training.batch_size // self.ctx.world_size
        if size == 0:
            raise ValueError(
                f"training.batch_size ({self.spec.training.batch_size}) is smaller than "
                f"resources.devices ({self.ctx.world_size})"
            )
        return size

    def train_batches(self, epoch: int) -> D.RankBatches[tuple[Tensor, Tensor, Tensor]]:
        train = self.index["train"]
        gen = torch.Generator().manual_seed(_seed(self.spec.training.seed, epoch))
        order = train[torch.randperm(train.numel(), generator=gen)]
        mine = D.shard_items(order, self.ctx.rank, self.ctx.world_size)
        size = self.per_rank_batch_size()
        count = -(-mine.numel() // size)
        return D.RankBatches(lambda: self._batches(epoch, mine, size), count)

    def _batches(
        self, epoch: int, mine: Tensor, size: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """`(noisy input, clean target, eps)` per batch of this rank's sites."""
        world, rank = self.ctx.world_size, self.ctx.rank
        species, latent = self.x.size(1), self.spec.model.latent_dim
        noise = self.spec.noise
        for k, sites in enumerate(mine.split(size)):
            # Global batch k holds world x len(sites) sites; this rank's are rows rank::world
            # of the global draws (the strided layout of shard_items).
            rows = world * sites.numel()
            gen = torch.Generator().manual_seed(_seed(self.spec.training.seed, epoch, 1 + k))
            target = self.x[sites.to(self.x.device)]
            if isinstance(noise, GaussianNoise):
                draws = torch.randn(rows, species, generator=gen)[rank::world]
                inputs = target + noise.std * draws.to(target.device)
            else:
                draws = torch.rand(rows, species, generator=gen)[rank::world]
                inputs = target * (draws >= noise.rate).to(target.device)
            eps = torch.randn(rows, latent, generator=gen)[rank::world]
            yield inputs, target, eps.to(target.device)

    def kl_weight(self) -> float:
        """The KL weight of the current step: annealed linearly over `kl_anneal_steps`."""
        steps = self.spec.kl_anneal_steps
        if steps <= 0:
            return self.spec.kl_weight
        return self.spec.kl_weight * min(1.0, self.global_step / steps)

    def training_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Any:
        inputs, target, eps = batch
        logits, mean, log_var = model(inputs, eps)
        objective = getattr(model, "module", model).loss  # the model owns its objective
        return objective(logits, target, mean, log_var, self.kl_weight())

    def loss_parts(self) -> tuple[str, ...]:
        return LOSS_PARTS

    # --- evaluation -----------------------------------------------------------------------------

    @torch.no_grad()
    def _forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`(logits, mean, log_var)` of every row of `x` in chunks (eval mode: z = mean)."""
        model = getattr(model, "module", model)
        was_training = model.training
        model.eval()
        outs = [model(chunk) for chunk in x.split(EVAL_CHUNK)]
        model.train(was_training)
        return tuple(torch.cat([o[i].float() for o in outs]) for i in range(3))  # type: ignore[return-value]

    def evaluate(self, model: nn.Module, split: str, epoch: int) -> dict[str, float]:
        idx = self.index[split].to(self.x.device)
        if idx.numel() == 0:
            return {}  # no test sites (a train/val split): the summary says so
        unwrapped = getattr(model, "module", model)
        x = self.x[idx]
        logits, mean, log_var = self._forward(model, x)
        parts = unwrapped.loss(logits, x, mean, log_var, self.spec.kl_weight)
        masked_logits = self._forward(model, self.masked[idx])[0]
        auc = masked_auc(masked_logits, self.hidden[idx], self.masked[idx] == 0)
        metrics = {f"{split}_{name}": float(value) for name, value in parts.items()}
        metrics[f"{split}_masked_auc"] = auc
        self.results[split] = metrics
        return metrics

    def metric_names(self) -> set[str]:
        return {"val_loss", *(f"val_{p}" for p in LOSS_PARTS), "val_masked_auc"}

    def predict(self, model: nn.Module, split: str) -> dict[str, Tensor]:
        """`{"sites", "embeddings", "reconstruction", "masked_scores"}` of `split`'s sites:
        latent means, probabilities of the clean input and of the masked input."""
        idx = self.index[split].to(self.x.device)
        logits, mean, _ = self._forward(model, self.x[idx])
        masked_logits = self._forward(model, self.masked[idx])[0]
        return {
            "sites": idx.cpu(),
            "embeddings": mean.cpu(),
            "reconstruction": torch.sigmoid(logits).cpu(),
            "masked_scores": torch.sigmoid(masked_logits).cpu(),
        }

    # --- outputs --------------------------------------------------------------------------------

    def _split_names(self) -> np.ndarray:
        split_of = np.full(self.x.size(0), "", dtype=object)
        for name, idx in self.index.items():
            split_of[idx.numpy()] = name
        return split_of

    @torch.no_grad()
    def write_outputs(self, model: nn.Module, run_dir: Path) -> list[Output]:
        matrix = self.matrix
        assert matrix is not None
        if self.index["test"].numel() == 0:  # the summary's figure: val with the best weights
            self.evaluate(model, "val", self.epoch)
        logits, mean, _ = self._forward(model, self.x)
        embeddings = mean.cpu().numpy().astype(np.float32)  # [sites, latent]
        np.save(run_dir / "embeddings.npy", embeddings)
        np.save(run_dir / "reconstruction.npy", torch.sigmoid(logits).cpu().numpy())
        split_of = self._split_names()
        with open(run_dir / "site_ids.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "site_id", "split"])
            writer.writerows(zip(range(len(split_of)), matrix.site_ids, split_of, strict=True))
        with open(run_dir / "species.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["column", "name", "prevalence"])
            prevalence = np.round(matrix.prevalence, 6)
            writer.writerows(zip(range(len(prevalence)), matrix.species, prevalence, strict=True))
        self._write_predictions(model, run_dir / "predictions.csv", split_of)
        outputs = [
            *embeddings_outputs("embeddings.npy", embeddings.shape, "site_ids.csv", "site_id"),
            Output("data", "species.csv"),
            Output(
                "predictions",
                "reconstruction.npy",
                meta={
                    "shape": [int(s) for s in logits.shape],
                    "dtype": "float32",
                    "ids": "site_ids.csv",
                    "columns": "species.csv",
                },
            ),
            Output("predictions", "predictions.csv"),
        ]
        plot = training_curves(
            run_dir,
            parts=(
                ("loss", "Total loss"),
                ("recon_loss", "Reconstruction (BCE)"),
                ("kl_loss", "KL divergence"),
            ),
        )
        if plot is not None:
            outputs.append(Output("plot", plot))
        return outputs

    def _write_predictions(self, model: nn.Module, path: Path, split_of: np.ndarray) -> None:
        """One row per masked (hidden) presence of the val and test sites: its score, the
        baseline's, and its rank among its site's candidate cells (1 = the best scored)."""
        assert self.matrix is not None
        idx = torch.cat([self.index["val"], self.index["test"]]).to(self.x.device)
        scores = torch.sigmoid(self._forward(model, self.masked[idx])[0])  # [n, species]
        candidates = self.masked[idx] == 0
        ranked = torch.where(candidates, scores, torch.full_like(scores, -1.0)).sort(1).values
        above = scores.size(1) - torch.searchsorted(ranked, scores.contiguous(), right=True)
        site, species = torch.nonzero(self.hidden[idx], as_tuple=True)
        rows = idx[site].cpu().numpy()
        baseline = self.train_prevalence.to(scores.device)[species]
        columns = {
            "site_id": self.matrix.site_ids[rows],
            "split": split_of[rows],
            "species": self.matrix.species[species.cpu().numpy()],
            "score": np.round(scores[site, species].cpu().numpy(), 6),
            "baseline": np.round(baseline.cpu().numpy(), 6),
            "rank": (above[site, species] + 1).cpu().numpy(),
            "candidates": candidates.sum(1)[site].cpu().numpy(),
        }
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(columns))
            writer.writerows(zip(*columns.values(), strict=True))

    def summary(self) -> dict[str, Any]:
        assert self.matrix is not None
        has_test = self.index["test"].numel() > 0
        split = "test" if has_test else "val"
        quality = {
            "metric": "masked_auc",
            "split": split,
            "value": self.results.get(split, {}).get(f"{split}_masked_auc"),
            "baseline": self.baseline.get(split),
            "baseline_kind": "species frequency (training-site prevalence)",
            "masked_fraction": self.spec.quality.masked_fraction,
            "masked_cells": int(self.hidden[self.index[split].to(self.x.device)].sum()),
        }
        out: dict[str, Any] = {
            "quality": quality,
            "data": {
                "file": self.matrix.file,
                "format": self.spec.data.format,
                "sites": int(self.x.size(0)),
                "species": int(self.x.size(1)),
                "dropped_species": self.matrix.dropped_species,
                "presence_fraction": round(float(self.matrix.presence.mean()), 6),
                **{f"{s}_sites": int(self.index[s].numel()) for s in SPLITS},
            },
            "data_warnings": self.matrix.warnings,
        }
        if not has_test:
            out["test_metrics"] = (
                "skipped: the split has no test sites (data.split.fractions ends in 0); "
                "quality is measured on the validation sites"
            )
        return out


__all__ = ["DenoisingVaeTask", "hide_presences", "load_species", "masked_auc"]
