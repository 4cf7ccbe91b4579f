"""DT-GCNN: text embeddings trained with a triplet loss by a GCN over a dynamic cosine kNN graph
of the texts (seed 002).

Training (`graph.scope: corpus`) runs the GCN over every training text at each step and takes
the batch's triplets from the result; the graph starts as the input features' kNN graph and is
rebuilt from the current embeddings every `graph.rebuild_every_n_epochs` (the graph's source is
part of the checkpointed family state, so a resumed run trains on the same graph). Evaluation
builds the graph over the evaluated split's own texts from their features (no labels, no other
split's texts), refined once from the embeddings it gives when rebuilding is on.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from core import distributed as D
from core.data.splits import SPLITS
from core.data.texts import (
    SOURCE_NAMES,
    TextCorpus,
    hard_label_negatives,
    join_on_anchor,
    load_texts,
)
from core.families.dt_gcnn.augment import variants
from core.families.dt_gcnn.features import featurize
from core.families.dt_gcnn.graph import gcn_adjacency, knn_graph
from core.families.dt_gcnn.model import DTGCNN, rowwise_distance
from core.families.dt_gcnn.spec import FREEZABLE, DtGcnnSpec, FeatureNoise
from core.plots import embedding_map, training_curves, tsne_2d
from core.projection import pca_2d, umap_2d
from core.task import Output, RunContext, Task, embeddings_outputs

log = logging.getLogger(__name__)

GRADED_GAP = 1.0  # graded accuracy: two partners of one anchor whose scores differ this much


def _epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 9_176 + 7_919) % (2**63 - 1)


def _umap_installed() -> bool:
    """Whether umap-learn is importable (a stale namespace directory `umap` does not count)."""
    found = importlib.util.find_spec("umap")
    return found is not None and found.origin is not None


def _unwrapped(model: nn.Module) -> DTGCNN:
    return getattr(model, "module", model)


class SplitView:
    """One split's texts in local rows (0..n-1), its triplets and scored pairs in those rows,
    and the sorted keys `a * n + p` of its known positive pairs (either direction)."""

    def __init__(self, corpus: TextCorpus, split: str):
        self.rows = corpus.split_texts(split)  # [n] global text rows, sorted
        n = self.rows.numel()
        self.n = n
        index = corpus.split_triplets(split)
        self.triplets = torch.searchsorted(self.rows, corpus.triplets[index])  # [M, 3]
        ap = self.triplets[:, :2]
        both = torch.cat([ap, ap.flip(1)])
        self.positive_keys = torch.unique(both[:, 0] * n + both[:, 1])
        self.pair_index = corpus.split_pairs(split)  # [P] into the corpus's pairs
        if corpus.pairs is not None and corpus.scores is not None:
            self.pairs = torch.searchsorted(self.rows, corpus.pairs[self.pair_index])  # [P, 2]
            self.scores = corpus.scores[self.pair_index]
        else:
            self.pairs = torch.zeros(0, 2, dtype=torch.long)
            self.scores = torch.zeros(0)
        self.entailed = (
            corpus.entailed[self.pair_index].float()
            if corpus.entailed is not None
            else torch.zeros(self.pairs.size(0))
        )
        # [n] each text's class (labeled_texts), else None.
        self.labels = None if corpus.labels is None else corpus.labels[self.rows]


def recall_at_1(z: Tensor, labels: Tensor, chunk_size: int = 4096) -> float:
    """The share of texts whose nearest other text (cosine) has their class, over the texts
    whose class has another text here (leave-one-out 1-NN). z [n, D], labels [n]."""
    n = z.size(0)
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1)[labels]
    unit = torch.nn.functional.normalize(z.float(), dim=1)
    nearest = torch.empty(n, dtype=torch.long, device=z.device)
    for start in range(0, n, chunk_size):  # chunks of rows: memory [chunk, n]
        sim = unit[start : start + chunk_size] @ unit.T
        local = torch.arange(sim.size(0), device=z.device)
        sim[local, local + start] = -torch.inf
        nearest[start : start + chunk_size] = sim.argmax(1)
    counted = counts >= 2
    if not counted.any():
        return math.nan
    return float((labels[nearest] == labels)[counted].float().mean())


def pair_metrics(z: Tensor, pairs: Tensor, scores: Tensor, prefix: str) -> dict[str, float]:
    """Spearman and Pearson of the pairs' cosine similarity against their scores, and the
    graded triplet accuracy: for two partners of one text whose scores differ by at least
    `GRADED_GAP`, the share where the higher-scored partner is the more similar."""
    if pairs.size(0) < 2:
        return {}
    cos = torch.nn.functional.cosine_similarity(z[pairs[:, 0]], z[pairs[:, 1]], dim=1).cpu()
    c, s = cos.double().numpy(), scores.double().numpy()
    out = {
        f"{prefix}_spearman": float(stats.spearmanr(c, s).statistic),
        f"{prefix}_pearson": float(stats.pearsonr(c, s).statistic),
    }
    # Every pair both ways, then every two partners of one anchor.
    directed = torch.cat([pairs, pairs.flip(1)]).cpu()
    d_cos, d_score = torch.cat([cos, cos]), torch.cat([scores, scores])
    i, j = join_on_anchor(directed, directed, int(directed.max()) + 1)
    graded = d_score[i] - d_score[j] >= GRADED_GAP
    if graded.any():
        correct = d_cos[i[graded]] > d_cos[j[graded]]
        out[f"{prefix}_graded_accuracy"] = float(correct.float().mean())
    return out


class DtGcnnTask(Task):
    spec: DtGcnnSpec

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.corpus: TextCorpus | None = None
        self.x: Tensor | None = None  # [T, F] features of every text
        self.views: dict[str, SplitView] = {}
        self.model: DTGCNN | None = None
        # The training graph: built from `graph_source` ([n_train, D]; None: the features) at
        # epoch `graph_epoch`. Checkpointed (`state_dict`).
        self.graph_source: Tensor | None = None
        self.graph_epoch = 1
        self.adj: Tensor | None = None
        self.results: dict[str, dict[str, float]] = {}
        self.easy_first = torch.zeros(0, dtype=torch.long)  # training triplets, easiest first
        self.stage = 0  # the curriculum stage of the epoch being trained
        self.freeze_stage = -1  # the freeze stage in force (-1: none yet, all parts train)
        # Text augmentations: per spec entry, [copies, n_train, F] features of the variants.
        self.text_variants: list[tuple[Tensor, float]] = []
        self.score_range = (0.0, 1.0)  # the training scores' min and max (relatedness head)

    # --- data and model -------------------------------------------------------------------------

    def setup_data(self) -> None:
        spec = self.spec
        if "umap" in spec.plots.maps and not _umap_installed():
            raise ValueError(
                "plots.maps 'umap' needs the optional umap-learn package (pip install "
                "'trainctl[umap]'); choose one of tsne, or leave it out (PCA is always drawn)"
            )
        corpus = load_texts(spec.data, spec.training.seed)
        features = featurize(corpus.texts, spec.features)
        if getattr(spec.data, "negatives", "random") == "hard":
            corpus = hard_label_negatives(corpus, torch.from_numpy(features), spec.graph.chunk_size)
        self.corpus = corpus
        self.views = {name: SplitView(corpus, name) for name in SPLITS}
        empty = [name for name, v in self.views.items() if v.triplets.size(0) == 0]
        if empty:
            raise ValueError(f"split(s) {empty} have no triplets with data {spec.data.format!r}")
        self.x = torch.from_numpy(features).to(self.ctx.device)
        self._text_augmentations()
        train = self.views["train"]
        if train.scores.numel():
            self.score_range = (float(train.scores.min()), float(train.scores.max()))
        if self.spec.training.batch_size // self.ctx.world_size == 0:
            raise ValueError(
                f"training.batch_size ({spec.training.batch_size}) is smaller than "
                f"resources.devices ({self.ctx.world_size})"
            )
        self._set_graph(None)
        # Training triplets from the easiest (largest relatedness gap) to the hardest.
        train_gaps = corpus.triplet_gaps()[corpus.split_triplets("train")]
        self.easy_first = torch.argsort(-train_gaps.nan_to_num(0.0), stable=True)
        self.stage = self.curriculum_stage(1)

    def _text_augmentations(self) -> None:
        """Featurise `copies` variants of every training text per word augmentation (seeded;
        the featuriser fitted on the corpus, cached like the corpus's features)."""
        assert self.corpus is not None and self.x is not None
        texts = self.corpus.texts[self.views["train"].rows.numpy()]
        for i, aug in enumerate(self.spec.augmentation):
            if isinstance(aug, FeatureNoise):
                continue
            seed = aug.seed if aug.seed is not None else self.spec.training.seed + 7_919 * i
            copies = variants(texts, aug.kind, aug.rate, aug.copies, seed)  # [copies, n]
            z = featurize(self.corpus.texts, self.spec.features, copies.reshape(-1))
            z = torch.from_numpy(z).view(aug.copies, len(texts), -1).to(self.ctx.device)
            self.text_variants.append((z, aug.probability))
            log.info("%s: %d variants of %d training texts featurised", aug.kind, aug.copies,
                     len(texts))  # fmt: skip

    def build_model(self) -> nn.Module:
        assert self.x is not None and self.corpus is not None, "setup_data first"
        s = self.spec
        classes = 0 if self.corpus.label_names is None else len(self.corpus.label_names)
        widths = {"label": classes, "relatedness": 1, "entailment": 1}
        model = DTGCNN(
            int(self.x.size(1)),
            **s.model.model_dump(),  # the spec's model fields are the constructor's keywords
            **s.loss.model_dump(),
            mining=s.mining.strategy,
            aux_heads={h.kind: widths[h.kind] for h in s.aux_heads},
        )
        train = self.views["train"]
        log.info(
            "dt_gcnn: %d texts (train %d), triplets train %d / val %d / test %d, features %s",
            self.x.size(0),
            train.n,
            *(self.views[name].triplets.size(0) for name in SPLITS),
            tuple(self.x.shape),
        )
        self.model = model.to(self.ctx.device)
        return self.model

    # --- the graph ------------------------------------------------------------------------------

    def _adjacency(self, source: Tensor) -> Tensor | None:
        g = self.spec.graph
        if g.k == 0:
            return None
        edges = knn_graph(source, g.k, g.min_similarity, g.chunk_size)
        return gcn_adjacency(edges, source.size(0))

    def _train_x(self) -> Tensor:
        assert self.x is not None
        return self.x[self.views["train"].rows.to(self.x.device)]

    def _set_graph(self, source: Tensor | None) -> None:
        self.graph_source = source
        if self.spec.graph.scope == "corpus":
            self.adj = self._adjacency(self._train_x() if source is None else source)

    def _maybe_rebuild(self, epoch: int) -> None:
        """Rebuild the training graph from the current embeddings on the epochs it is due."""
        every = self.spec.graph.rebuild_every_n_epochs
        if self.spec.graph.k == 0 or every == 0 or self.model is None:
            return
        due = 1 + ((epoch - 1) // every) * every  # the last rebuild epoch at or before `epoch`
        if due <= self.graph_epoch:
            return
        model = self.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            x = self._train_x()
            adj = (
                self.adj
                if self.spec.graph.scope == "corpus"
                else self._adjacency(x if self.graph_source is None else self.graph_source)
            )
            z = model(x, adj).detach()
        model.train(was_training)
        self._set_graph(z)
        self.graph_epoch = due
        log.debug("epoch %d: kNN graph rebuilt from the current embeddings", epoch)

    # --- training -------------------------------------------------------------------------------

    def curriculum_stage(self, epoch: int) -> int:
        """The curriculum stage (0-based) of `epoch`."""
        c = self.spec.curriculum
        if c.stages == 1:
            return 0
        per_stage = c.epochs_per_stage or -(-self.spec.training.epochs // c.stages)
        return min(c.stages - 1, (epoch - 1) // per_stage)

    def _stage_triplets(self, epoch: int) -> Tensor:
        """The training triplets of `epoch`'s curriculum stage (all without a curriculum)."""
        triplets = self.views["train"].triplets
        stages = self.spec.curriculum.stages
        self.stage = self.curriculum_stage(epoch)
        if stages == 1:
            return triplets
        keep = -(-triplets.size(0) * (self.stage + 1) // stages)
        return triplets[self.easy_first[:keep]]

    def freeze_stage_at(self, epoch: int) -> int:
        """The index of the freeze stage in force at `epoch` (-1: before the first)."""
        epochs = torch.tensor([stage.epoch for stage in self.spec.freeze_stages])
        return int((epochs <= epoch).sum()) - 1

    def _apply_freeze(self, epoch: int) -> None:
        """Freeze the parts `epoch`'s stage names: no gradient (so the optimizer skips them)
        and eval mode for their batch norms and dropout; every other part trains. Called at
        each epoch's start, so a resumed run is in the right stage from its first epoch."""
        if not self.spec.freeze_stages or self.model is None:
            return
        index = self.freeze_stage_at(epoch)
        frozen = set(self.spec.freeze_stages[index].freeze) if index >= 0 else set()
        params, modules = self.model.parts(), self.model.part_modules()
        for part in FREEZABLE:
            for p in params[part]:
                p.requires_grad_(part not in frozen)
                if part in frozen:
                    p.grad = None
            for module in modules[part]:
                module.train(part not in frozen and self.model.training)
        if index != self.freeze_stage:
            log.info("epoch %d: freeze stage %d, frozen: %s", epoch, index + 1,
                     ", ".join(sorted(frozen)) or "nothing")  # fmt: skip
        self.freeze_stage = index

    def train_batches(self, epoch: int) -> D.RankBatches[Tensor]:
        self._maybe_rebuild(epoch)
        self._apply_freeze(epoch)
        triplets = self._stage_triplets(epoch)
        gen = torch.Generator().manual_seed(_epoch_seed(self.spec.training.seed, epoch))
        order = torch.randperm(triplets.size(0), generator=gen)
        mine = D.shard_items(order, self.ctx.rank, self.ctx.world_size)
        size = self.spec.training.batch_size // self.ctx.world_size
        count = -(-mine.numel() // size)
        device = self.ctx.device

        def batches():
            for start in range(0, mine.numel(), size):
                yield triplets[mine[start : start + size]].to(device)

        return D.RankBatches(batches, count)

    def _valid(self, triplets: Tensor, candidates: Tensor, rows: Tensor | None) -> Tensor:
        """[B, C] which candidates may be each anchor's negative: not the anchor, not its
        positive, not a known positive of it. `rows` maps batch rows to training rows."""
        view = self.views["train"]
        keys = view.positive_keys.to(triplets.device)
        a, p = triplets[:, :1], triplets[:, 1:2]
        c = candidates[None, :]
        valid = (c != a) & (c != p)
        if rows is not None:
            a, c = rows[a], rows[c]
        if view.labels is not None:  # a negative must be of another class
            labels = view.labels.to(triplets.device)
            valid = valid & (labels[c] != labels[a])
        query = a * view.n + c  # [B, C]
        # `keys` is sorted: a binary search per query beats `torch.isin` (which sorts them all).
        at = torch.searchsorted(keys, query).clamp(max=max(keys.numel() - 1, 0))
        known = keys[at] == query if keys.numel() else torch.zeros_like(valid)
        return valid & ~known

    def _augment(self, x: Tensor) -> Tensor:
        """`x` [n_train, F] with the spec's augmentations in order (global RNG, like dropout):
        a word augmentation replaces a `probability` share of the texts by one of their
        variants, feature noise adds Gaussian noise."""
        variants_left = iter(self.text_variants)
        for aug in self.spec.augmentation:
            if not isinstance(aug, FeatureNoise):
                z, probability = next(variants_left)  # [copies, n, F]
                n = x.size(0)
                which = torch.randint(z.size(0), (n,), device=x.device)
                replace = torch.rand(n, device=x.device) < probability
                x = torch.where(replace[:, None], z[which, torch.arange(n, device=x.device)], x)
                continue
            scale = x.std(0, keepdim=True) * aug.std  # [1, F]
            noise = torch.randn_like(x) * scale
            if aug.probability < 1:
                noise = noise * (torch.rand(x.size(0), 1, device=x.device) < aug.probability)
            x = x + noise
        return x

    def training_loss(self, model: nn.Module, batch: Tensor) -> dict[str, Tensor]:
        objective = _unwrapped(model)
        margin = objective.margin_at(self.epoch, self.spec.training.epochs)
        x = self._augment(self._train_x())
        if self.spec.graph.scope == "corpus":
            z = model(x, self.adj)  # [n_train, out_dim], through DDP's forward
            triplets, rows = batch, None
            candidates = torch.unique(batch)
        else:  # the batch's texts and the kNN graph among them
            rows, inverse = torch.unique(batch, return_inverse=True)
            source = x if self.graph_source is None else self.graph_source
            z = model(x[rows], self._adjacency(source[rows]))
            triplets = inverse.view(-1, 3)
            candidates = torch.arange(rows.numel(), device=batch.device)
        valid = None
        if objective.mining != "none":
            valid = self._valid(triplets, candidates, rows)
        out = objective.loss(z, triplets, candidates, valid, margin)
        out["triplet"] = out["loss"]
        total = out["loss"]
        for head in self.spec.aux_heads:
            term = self._aux_train(objective, head.kind, z, triplets, rows, head.pairs_per_step)
            out[f"aux_{head.kind}"] = term
            total = total + head.weight * term
        out["loss"] = total
        return out

    def _aux_train(
        self, objective: DTGCNN, kind: str, z: Tensor, triplets: Tensor, rows: Tensor | None,
        pairs_per_step: int,
    ) -> Tensor:  # fmt: skip
        """An auxiliary head's loss on the step: `label` over the batch's texts, the pair
        heads over `pairs_per_step` training pairs drawn at random (global RNG)."""
        view = self.views["train"]
        if kind == "label":
            assert view.labels is not None
            texts = torch.unique(triplets)  # rows of z
            train_rows = texts if rows is None else rows[texts]
            return objective.aux_loss(kind, z[texts], view.labels.to(z.device)[train_rows])
        pick = torch.randint(view.pairs.size(0), (pairs_per_step,))
        pairs = view.pairs[pick].to(z.device)
        return objective.aux_loss(kind, z, self._aux_target(kind, view, pick), pairs)

    def _aux_target(self, kind: str, view: SplitView, index: Tensor) -> Tensor:
        if kind == "relatedness":
            low, high = self.score_range
            return ((view.scores[index] - low) / max(high - low, 1e-12)).to(self.ctx.device)
        return view.entailed[index].to(self.ctx.device)

    def loss_parts(self) -> tuple[str, ...]:
        aux = tuple(f"aux_{h.kind}" for h in self.spec.aux_heads)
        return ("active_fraction", "pos_distance", "neg_distance", "triplet", *aux)

    # --- evaluation -----------------------------------------------------------------------------

    @torch.no_grad()
    def embed_split(self, model: nn.Module, split: str) -> Tensor:
        """[n, out_dim] embeddings of `split`'s texts over the graph of its own texts."""
        assert self.x is not None
        model = _unwrapped(model)
        was_training = model.training
        model.eval()
        x = self.x[self.views[split].rows.to(self.x.device)]
        z = model(x, self._adjacency(x))
        g = self.spec.graph
        if g.k > 0 and g.rebuild_every_n_epochs > 0:
            z = model(x, self._adjacency(z))  # once refined from its own embeddings
        model.train(was_training)
        return z.float()

    def _metrics(self, z: Tensor, split: str, distance: str, margin: float) -> dict[str, float]:
        view = self.views[split]
        t = view.triplets.to(z.device)
        d_ap = rowwise_distance(z[t[:, 0]], z[t[:, 1]], distance)
        d_an = rowwise_distance(z[t[:, 0]], z[t[:, 2]], distance)
        losses = torch.relu(d_ap - d_an + margin)
        out = {
            f"{split}_loss": float(losses.mean()),
            f"{split}_accuracy": float((d_ap < d_an).float().mean()),
            f"{split}_pos_distance": float(d_ap.mean()),
            f"{split}_neg_distance": float(d_an.mean()),
            f"{split}_hard_negative_ratio": float((d_an < d_ap + margin).float().mean()),
            f"{split}_active_fraction": float((losses > 0).float().mean()),
            f"{split}_embedding_std": float(z.std(0).mean()),
        }
        if view.labels is not None:
            out[f"{split}_recall_at_1"] = recall_at_1(z, view.labels.to(z.device))
        return out | pair_metrics(z, view.pairs.to(z.device), view.scores, split)

    @torch.no_grad()
    def _aux_metrics(self, model: DTGCNN, z: Tensor, split: str) -> dict[str, float]:
        """Each auxiliary head's loss on `split` (all its texts or pairs)."""
        view = self.views[split]
        out = {}
        was_training = model.training
        model.eval()
        for head in self.spec.aux_heads:
            if head.kind == "label":
                assert view.labels is not None
                value = model.aux_loss("label", z, view.labels.to(z.device))
            elif view.pairs.size(0) == 0:
                continue
            else:
                everything = torch.arange(view.pairs.size(0))
                target = self._aux_target(head.kind, view, everything)
                value = model.aux_loss(head.kind, z, target, view.pairs.to(z.device))
            out[f"{split}_aux_{head.kind}"] = float(value)
        model.train(was_training)
        return out

    def evaluate(self, model: nn.Module, split: str, epoch: int) -> dict[str, float]:
        objective = _unwrapped(model)
        z = self.embed_split(model, split)
        margin = objective.margin_at(max(self.epoch, 1), self.spec.training.epochs)
        metrics = self._metrics(z, split, objective.distance, margin)
        metrics |= self._aux_metrics(objective, z, split)
        # The loss parts as in training: `loss` is the triplet loss plus the weighted heads.
        metrics[f"{split}_triplet"] = metrics[f"{split}_loss"]
        for head in self.spec.aux_heads:
            aux = metrics.get(f"{split}_aux_{head.kind}")
            if aux is not None:
                metrics[f"{split}_loss"] += head.weight * aux
        threshold = self.spec.embedding_check.collapse_std
        if metrics[f"{split}_embedding_std"] < threshold:
            log.warning(
                "epoch %d: the %s embeddings are collapsing (mean per-dimension std %.4g < %g)",
                epoch,
                split,
                metrics[f"{split}_embedding_std"],
                threshold,
            )
        self.results[split] = metrics
        return metrics

    def metric_names(self) -> set[str]:
        extra = {"curriculum_stage"} if self.spec.curriculum.stages > 1 else set()
        return set(self.spec.reported_metrics()) | extra

    def epoch_metrics(self, model: nn.Module, epoch: int, final: bool) -> dict[str, float]:
        if self.spec.curriculum.stages == 1 or final:
            return {}
        return {"curriculum_stage": float(self.curriculum_stage(epoch) + 1)}

    def baseline(self) -> dict[str, dict[str, float]]:
        """The same metrics for the input features alone (cosine distance): what training
        bought."""
        assert self.x is not None
        out = {}
        for split in ("val", "test"):
            x = self.x[self.views[split].rows.to(self.x.device)].float()
            out[split] = self._metrics(x, split, "cosine", self.spec.loss.margin)
        return out

    def predict(self, model: nn.Module, split: str) -> dict[str, Tensor]:
        """`{"embeddings": [n, out_dim], "rows": [n] text rows}` of `split`'s texts."""
        return {"embeddings": self.embed_split(model, split), "rows": self.views[split].rows}

    # --- state and outputs --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        source = None if self.graph_source is None else self.graph_source.cpu()
        return {"graph_epoch": self.graph_epoch, "graph_source": source, "stage": self.stage,
                "freeze_stage": self.freeze_stage}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        source = state.get("graph_source")
        self._set_graph(None if source is None else source.to(self.ctx.device))
        self.graph_epoch = int(state.get("graph_epoch", 1))
        self.stage = int(state.get("stage", 0))
        # The stage follows the epoch (`_apply_freeze` at the next epoch's start); kept for
        # the log line and for inspection.
        self.freeze_stage = int(state.get("freeze_stage", -1))

    @torch.no_grad()
    def write_outputs(self, model: nn.Module, run_dir: Path) -> list[Output]:
        corpus = self.corpus
        assert corpus is not None
        split_z = {name: self.embed_split(model, name).cpu() for name in SPLITS}
        dim = split_z["train"].size(1)
        # Each text's row comes from the first split (train, val, test) that uses it.
        embeddings = torch.zeros(corpus.num_texts, dim)
        for name in reversed(SPLITS):
            embeddings[self.views[name].rows] = split_z[name]
        array = embeddings.numpy().astype(np.float32)
        np.save(run_dir / "embeddings.npy", array)
        text_split = corpus.text_split()
        with open(run_dir / "text_ids.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "text_id", "split", "text"])
            writer.writerows(
                zip(range(corpus.num_texts), corpus.text_ids, text_split, corpus.texts,
                    strict=True)
            )  # fmt: skip
        outputs = embeddings_outputs("embeddings.npy", array.shape, "text_ids.csv", "text_id")
        if corpus.pairs is not None and corpus.pair_ids is not None:
            self._write_predictions(run_dir / "predictions.csv", split_z)
            outputs.append(Output("predictions", "predictions.csv"))
        self._write_triplets(run_dir / "triplets.csv")
        outputs.append(Output("data", "triplets.csv", meta={"rows": len(corpus.triplets)}))
        if self.spec.plots.enabled:
            outputs += self._write_plots(run_dir, split_z["test"])
        return outputs

    def _write_plots(self, run_dir: Path, z: Tensor) -> list[Output]:
        """The metric curves and the 2-D maps of (a seeded sample of) the test embeddings."""
        outputs = []
        total = "Loss (triplet + auxiliary)" if self.spec.aux_heads else "Triplet loss"
        parts = [("loss", total), ("accuracy", "Triplet accuracy")]
        if self.spec.has_pairs:
            parts.append(("spearman", "Spearman (cosine vs score)"))
        if self.spec.has_labels:
            parts.append(("recall_at_1", "Recall@1 (nearest text's class)"))
        parts += [(f"aux_{h.kind}", f"Auxiliary: {h.kind}") for h in self.spec.aux_heads]
        curves = training_curves(run_dir, "plots/metric_curves.png", parts)
        if curves is not None:
            outputs.append(Output("plot", curves, meta={"what": "metric curves"}))
        view = self.views["test"]
        gen = torch.Generator().manual_seed(self.spec.training.seed)
        keep = torch.randperm(z.size(0), generator=gen)[: self.spec.plots.max_points]
        keep = keep.sort().values
        points = z[keep].numpy()
        labels, names = None, None
        if view.labels is not None and self.corpus is not None:
            labels = view.labels[keep].numpy()
            names = self.corpus.label_names
        for method in ("pca", *self.spec.plots.maps):
            if method == "pca":
                coords = pca_2d(points)[0]
            elif method == "umap":
                coords = umap_2d(points, seed=self.spec.training.seed)
            else:
                coords = tsne_2d(points, self.spec.training.seed)
            path = f"plots/embedding_map_{method}.png"
            title = f"Test embeddings ({len(points)} texts), {method.upper()}"
            embedding_map(run_dir, coords, path, labels, names, title=title)
            outputs.append(Output("plot", path, meta={"method": method, "points": len(points)}))
        return outputs

    def _write_predictions(self, path: Path, split_z: dict[str, Tensor]) -> None:
        corpus = self.corpus
        assert corpus is not None and corpus.pairs is not None and corpus.pair_ids is not None
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["pair", "split", "text_id_a", "text_id_b", "cosine", "score"])
            for name in SPLITS:
                view, z = self.views[name], split_z[name]
                if view.pairs.size(0) == 0:
                    continue
                cos = torch.nn.functional.cosine_similarity(
                    z[view.pairs[:, 0]], z[view.pairs[:, 1]], dim=1
                )
                global_pairs = corpus.pairs[view.pair_index].numpy()
                writer.writerows(
                    zip(corpus.pair_ids[view.pair_index.numpy()], [name] * len(cos),
                        corpus.text_ids[global_pairs[:, 0]], corpus.text_ids[global_pairs[:, 1]],
                        np.round(cos.numpy(), 6), view.scores.numpy(), strict=True)
                )  # fmt: skip

    def _write_triplets(self, path: Path) -> None:
        """The triplets the run derived and trained on (and validated, tested on)."""
        corpus = self.corpus
        assert corpus is not None
        ids = corpus.text_ids[corpus.triplets.numpy()]  # [M, 3]
        splits = np.array(SPLITS)[corpus.triplet_split.numpy()]
        sources = np.array(SOURCE_NAMES)[corpus.triplet_source.numpy()]
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["split", "source", "anchor_id", "positive_id", "negative_id"])
            writer.writerows(zip(splits, sources, ids[:, 0], ids[:, 1], ids[:, 2], strict=True))

    def summary(self) -> dict[str, Any]:
        baseline = self.baseline()
        metric = (
            "spearman"
            if self.spec.has_pairs
            else "recall_at_1"
            if self.spec.has_labels
            else "accuracy"
        )
        value = self.results.get("test", {}).get(f"test_{metric}", math.nan)
        return {
            "quality": {
                "metric": metric,
                "split": "test",
                "value": value,
                "baseline": baseline["test"].get(f"test_{metric}", math.nan),
            },
            "baseline": baseline,
            # How much each GCN layer learned to take from the neighbours (0: none, 1: plain GCN).
            "graph_mix": []
            if self.model is None or self.spec.graph.k == 0
            else [round(float(g), 4) for g in self.model.graph_mix.detach().cpu()],
            "data": {
                "texts": self.corpus.num_texts if self.corpus else 0,
                "triplets": {n: int(v.triplets.size(0)) for n, v in self.views.items()},
                "pairs": {n: int(v.pairs.size(0)) for n, v in self.views.items()},
            },
        }


__all__ = ["DtGcnnTask", "SplitView", "pair_metrics", "recall_at_1"]
