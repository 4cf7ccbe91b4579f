"""On a CUDA device the core walks, samples and trains there (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from core.families.graphsage_skipgram.walks import CSR, NegativeSampler, random_walks, window_pairs
from core.run import train
from core.spec import load_spec
from tests.support.specs import tiny_cora

pytestmark = pytest.mark.gpu


def test_walks_pairs_and_negatives_stay_on_the_gpu():
    device = torch.device("cuda")
    src = torch.arange(1000, device=device)
    ei = torch.stack([torch.cat([src, (src + 1) % 1000]), torch.cat([(src + 1) % 1000, src])])
    csr = CSR.from_edge_index(ei, 1000)
    gen = torch.Generator(device=device).manual_seed(0)
    walks = random_walks(csr, src.repeat(4), 10, gen)
    pairs = window_pairs(walks, 3)
    negatives = NegativeSampler(csr.degree).sample((pairs.size(0), 5), gen)
    assert walks.is_cuda and pairs.is_cuda and negatives.is_cuda


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16-mixed"])
def test_cora_trains_on_the_gpu(tmp_path, precision):
    spec = load_spec(
        tiny_cora(training={"precision": precision}, resources={"accelerator": "cuda"})
    )
    summary = train(spec, tmp_path)
    assert summary["epochs_completed"] == 3
    assert summary["best_metrics"]["probe_test_acc"] > 0.3
