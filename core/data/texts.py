"""Text pair and triplet corpora: read, validate, split and derive (anchor, positive, negative)
triplets, for `data.format` `sick`, `scored_pairs` and `triplets` (`core.spec.texts`), and
`labeled_texts` (texts with a class label: triplets from the labels).

Every file error (a missing column, an empty text, a score that is not a number, a triplet
without one of its fields) raises `TextDataError` (the shared `TableError`), a ValueError naming
the file (relative to the data root), the line and the column. Delimited files are read by the
shared table reader (`core.data.tables.parse_columns`), JSON triplets line by line; everything
after it (text deduplication, validation, triplet derivation) is vectorised over numpy / torch
arrays.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from core.data.roots import resolve_data_path
from core.data.splits import SPLITS, split_indices
from core.data.tables import TableError, parse_columns
from core.spec.splits import FractionsSplit, OwnSplit
from core.spec.texts import ScoredPairsData, SickData, TextData, TripletDerivation, TripletsData

log = logging.getLogger(__name__)

SICK_FILES = {"train": "SICK_train.txt", "val": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
SICK_COLUMNS = ("pair_ID", "sentence_A", "sentence_B", "relatedness_score", "entailment_judgment")
TRIPLET_FIELDS = ("anchor", "positive", "negative")
# Where a triplet came from (`TextCorpus.triplet_source`).
SOURCE_GIVEN, SOURCE_PARTNER, SOURCE_RANDOM, SOURCE_HARD = 0, 1, 2, 3
SOURCE_NAMES = ("given", "partner", "random", "hard")
_RESAMPLE_ROUNDS = 16  # redraws of random negatives that hit a partner of the anchor


# A bad text data file is a bad table: one error type, naming the file (relative to the data
# root), the line (1-based, the header is line 1) and the column, and what is allowed.
TextDataError = TableError


def _text_error(
    file: str, line: int | None, column: str | None, message: str, allowed: str | None = None
) -> TextDataError:
    return TextDataError(file, message, line=line, column=column, allowed=allowed)


@dataclass
class TextCorpus:
    """Unique texts, the scored pairs over them (if any) and the triplets, each with a split
    (0 train, 1 val, 2 test)."""

    texts: np.ndarray  # [T] str, first-appearance order
    text_ids: np.ndarray  # [T] str
    triplets: Tensor  # [M, 3] text rows (anchor, positive, negative)
    triplet_split: Tensor  # [M]
    triplet_source: Tensor  # [M] SOURCE_*
    pairs: Tensor | None = None  # [P, 2] text rows
    scores: Tensor | None = None  # [P] float32
    entailed: Tensor | None = None  # [P] bool
    pair_ids: np.ndarray | None = None  # [P] str
    pair_split: Tensor | None = None  # [P]
    labels: Tensor | None = None  # [T] class index of each text (labeled_texts), long
    label_names: np.ndarray | None = None  # [C] str, the class of each index
    key: str = ""  # identifies the source and settings (for caches)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_texts(self) -> int:
        return int(self.texts.shape[0])

    @property
    def has_pairs(self) -> bool:
        return self.pairs is not None

    def split_pairs(self, split: str) -> Tensor:
        """Indices of `split`'s pairs (empty without pairs)."""
        if self.pair_split is None:
            return torch.zeros(0, dtype=torch.long)
        return torch.nonzero(self.pair_split == SPLITS.index(split)).view(-1)

    def split_triplets(self, split: str) -> Tensor:
        return torch.nonzero(self.triplet_split == SPLITS.index(split)).view(-1)

    def split_texts(self, split: str) -> Tensor:
        """The sorted text rows `split`'s pairs and triplets use."""
        parts = [self.triplets[self.split_triplets(split)].reshape(-1)]
        if self.pairs is not None:
            parts.append(self.pairs[self.split_pairs(split)].reshape(-1))
        return torch.unique(torch.cat(parts))

    def triplet_gaps(self) -> Tensor:
        """[M] how easy each triplet is: the score of (anchor, positive) minus that of (anchor,
        negative); a negative never paired with the anchor counts as scoring one below the
        lowest score. NaN without scored pairs."""
        m = self.triplets.size(0)
        if self.pairs is None or self.scores is None:
            return torch.full((m,), float("nan"))
        n = self.num_texts
        both = torch.cat([self.pairs, self.pairs.flip(1)])
        keys = both[:, 0] * n + both[:, 1]
        scores = torch.cat([self.scores, self.scores])
        order = torch.argsort(keys)
        keys, scores = keys[order], scores[order]
        floor = float(self.scores.min()) - 1.0

        def lookup(a: Tensor, b: Tensor) -> Tensor:
            query = a * n + b
            at = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
            return torch.where(keys[at] == query, scores[at], torch.full_like(scores[at], floor))

        t = self.triplets
        return lookup(t[:, 0], t[:, 1]) - lookup(t[:, 0], t[:, 2])

    def text_split(self) -> np.ndarray:
        """[T] the first split (train, val, test order) that uses each text."""
        first = torch.full((self.num_texts,), len(SPLITS), dtype=torch.long)
        for i, name in reversed(list(enumerate(SPLITS))):
            first[self.split_texts(name)] = i
        names = np.array([*SPLITS, ""], dtype=object)
        return names[first.numpy()]


# --- reading ------------------------------------------------------------------------------------


def _delimiter(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    return "\t" if path.suffix.lower() in (".tsv", ".txt", ".tab") else ","


def read_table(
    path: Path, rel: str, columns: list[str], delimiter: str
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The named `columns` of a delimited file with a header (str arrays, stripped) and the
    physical line of each row, read by the shared table reader (`core.data.tables`). Raises
    TextDataError (a TableError) for an unreadable file, a missing column or a row whose field
    count is not the header's."""
    table = parse_columns(path, rel, columns, delimiter, roles=["required"] * len(columns))
    return dict(table.columns), table.lines


def _check_texts(rel: str, values: dict[str, np.ndarray], lines: np.ndarray, cols: list[str]):
    """TextDataError at the first empty text of `cols` (in file order)."""
    empty = np.stack([np.char.str_len(values[c]) == 0 for c in cols], 1)  # [R, C]
    if empty.any():
        row, col = np.argwhere(empty)[0]
        raise _text_error(rel, int(lines[row]), cols[col], "the text is empty")


def _parse_scores(rel: str, raw: np.ndarray, lines: np.ndarray, column: str) -> np.ndarray:
    """[R] float scores; TextDataError at the first value that is not a finite number."""
    try:
        scores = raw.astype(np.float64)
    except ValueError:
        scores = None
    if scores is None or not np.isfinite(scores).all():
        for i, value in enumerate(raw):  # error path only: find the culprit
            try:
                ok = np.isfinite(float(value))
            except ValueError:
                ok = False
            if not ok:
                raise _text_error(
                    rel, int(lines[i]), column, f"{str(value)!r} is not a (finite) number"
                )
    assert scores is not None
    return scores


def _unique_texts(*columns: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The unique texts of `columns` in first-appearance order and each column as text rows."""
    flat = np.concatenate(columns)
    uniq, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    rows = rank[inverse.reshape(-1)]
    out, start = [], 0
    for col in columns:
        out.append(rows[start : start + col.size])
        start += col.size
    return uniq[order], out


def _text_ids(n: int) -> np.ndarray:
    width = max(6, len(str(n)))
    return np.char.add("t", np.char.zfill(np.arange(n).astype(str), width))


# --- triplet derivation (vectorised) -----------------------------------------------------------


def join_on_anchor(left: Tensor, right: Tensor, num_texts: int) -> tuple[Tensor, Tensor]:
    """Every (i, j) with left[i, 0] == right[j, 0]: the cartesian product per anchor, as
    index vectors into `left` [L, 2] and `right` [R, 2]."""
    order = torch.argsort(right[:, 0], stable=True)
    counts = torch.bincount(right[:, 0], minlength=num_texts)  # [T]
    starts = torch.cumsum(counts, 0) - counts
    per_left = counts[left[:, 0]]  # [L] partners of each left row's anchor
    li = torch.repeat_interleave(torch.arange(left.size(0)), per_left)
    offset = torch.arange(li.numel()) - torch.repeat_interleave(
        torch.cumsum(per_left, 0) - per_left, per_left
    )
    rj = order[starts[left[li, 0]] + offset]
    return li, rj


def _pair_keys(pairs: Tensor, num_texts: int) -> Tensor:
    """Sorted keys a * T + b of every pair in both directions and of each text with itself."""
    both = torch.cat([pairs, pairs.flip(1)])
    keys = torch.cat(
        [both[:, 0] * num_texts + both[:, 1], torch.arange(num_texts) * (num_texts + 1)]
    )
    return torch.unique(keys)


def derive_triplets(
    pairs: Tensor,
    scores: Tensor,
    entailed: Tensor,
    pair_split: Tensor,
    num_texts: int,
    cfg: TripletDerivation,
    seed: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Triplets [M, 3], their split [M] and source [M] from scored pairs [P, 2], per split:
    a positive pair is entailed or scores >= `positive_min_score`; its negatives are the
    anchor's own partners scoring <= `negative_max_score` and `random_negatives` seeded texts of
    the split never paired with the anchor (in any split)."""
    gen = torch.Generator().manual_seed(seed)
    known = _pair_keys(pairs, num_texts)
    positive = torch.zeros_like(entailed)
    if cfg.entailment_positive:
        positive |= entailed
    if cfg.positive_min_score is not None:
        positive |= scores >= cfg.positive_min_score
    low = (
        scores <= cfg.negative_max_score
        if cfg.negative_max_score is not None
        else torch.zeros_like(positive)
    )
    low &= ~positive
    out: list[Tensor] = []
    out_split: list[Tensor] = []
    out_source: list[Tensor] = []
    for s in range(len(SPLITS)):
        in_split = pair_split == s
        pos = pairs[in_split & positive]  # [A, 2] anchor, positive
        if cfg.symmetric:
            pos = torch.cat([pos, pos.flip(1)])
        if pos.numel() == 0:
            continue
        # The anchor's own low-scoring partners (either side of the pair).
        lows = pairs[in_split & low]
        lows = torch.cat([lows, lows.flip(1)])
        li, rj = join_on_anchor(pos, lows, num_texts)
        partner = torch.stack([pos[li, 0], pos[li, 1], lows[rj, 1]], 1)
        partner = partner[partner[:, 2] != partner[:, 1]]
        # Seeded random texts of the split that were never paired with the anchor.
        pool = torch.unique(pairs[in_split].reshape(-1))
        r = cfg.random_negatives
        anchors = pos.repeat_interleave(r, 0)  # [A * r, 2]
        neg = pool[torch.randint(pool.numel(), (anchors.size(0),), generator=gen)]
        for _ in range(_RESAMPLE_ROUNDS):
            bad = torch.isin(anchors[:, 0] * num_texts + neg, known)
            if not bad.any():
                break
            neg[bad] = pool[torch.randint(pool.numel(), (int(bad.sum()),), generator=gen)]
        ok = ~torch.isin(anchors[:, 0] * num_texts + neg, known)
        random = torch.cat([anchors[ok], neg[ok, None]], 1)
        both = torch.cat([partner, random])
        out.append(both)
        out_split.append(torch.full((both.size(0),), s, dtype=torch.long))
        source = torch.full((both.size(0),), SOURCE_RANDOM, dtype=torch.long)
        source[: partner.size(0)] = SOURCE_PARTNER
        out_source.append(source)
    if not out:
        empty = torch.zeros(0, dtype=torch.long)
        return torch.zeros(0, 3, dtype=torch.long), empty, empty
    return torch.cat(out), torch.cat(out_split), torch.cat(out_source)


# --- the formats ------------------------------------------------------------------------------


def _pairs_corpus(
    a: np.ndarray,
    b: np.ndarray,
    scores: np.ndarray,
    entailed: np.ndarray,
    pair_ids: np.ndarray,
    pair_split: np.ndarray,
    cfg: TripletDerivation,
    seed: int,
    key: str,
    name: str,
) -> TextCorpus:
    texts, (ra, rb) = _unique_texts(a, b)
    pairs = torch.from_numpy(np.stack([ra, rb], 1)).long()
    score_t = torch.from_numpy(scores).float()
    ent_t = torch.from_numpy(entailed).bool()
    split_t = torch.from_numpy(pair_split).long()
    seed = cfg.seed if cfg.seed is not None else seed
    triplets, t_split, t_source = derive_triplets(
        pairs, score_t, ent_t, split_t, len(texts), cfg, seed
    )
    corpus = TextCorpus(
        texts=texts,
        text_ids=_text_ids(len(texts)),
        triplets=triplets,
        triplet_split=t_split,
        triplet_source=t_source,
        pairs=pairs,
        scores=score_t,
        entailed=ent_t,
        pair_ids=pair_ids,
        pair_split=split_t,
        key=f"{key}|{cfg.model_dump_json()}|{seed}",
    )
    _check_splits(corpus, name)
    return corpus


def _check_splits(corpus: TextCorpus, what: str) -> None:
    counts = torch.bincount(corpus.triplet_split, minlength=len(SPLITS)).tolist()
    log.info(
        "%s: %d texts, %s pairs, triplets train %d / val %d / test %d",
        what,
        corpus.num_texts,
        "no" if corpus.pairs is None else corpus.pairs.size(0),
        *counts,
    )
    if counts[0] == 0:
        raise ValueError(
            f"{what}: no training triplets could be derived; lower "
            "data.triplets.positive_min_score or raise data.triplets.random_negatives"
        )


def load_sick(spec: SickData, seed: int) -> TextCorpus:
    """SICK's train / trial / test files as the train / val / test split."""
    directory = resolve_data_path(spec.path, expect=SICK_FILES["train"])
    parts: list[dict[str, np.ndarray]] = []
    for name, filename in SICK_FILES.items():
        rel = f"{spec.path.rstrip('/')}/{filename}"
        values, lines = read_table(directory / filename, rel, list(SICK_COLUMNS), "\t")
        if spec.max_pairs is not None:
            keep = max(1, round(spec.max_pairs * {"train": 0.45, "val": 0.1, "test": 0.45}[name]))
            values = {c: v[:keep] for c, v in values.items()}
            lines = lines[:keep]
        _check_texts(rel, values, lines, ["sentence_A", "sentence_B"])
        values["score"] = _parse_scores(rel, values["relatedness_score"], lines, SICK_COLUMNS[3])
        values["split"] = np.full(lines.size, SPLITS.index(name))
        parts.append(values)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    key = f"sick:{spec.path}:{spec.max_pairs}"
    return _pairs_corpus(
        cat["sentence_A"],
        cat["sentence_B"],
        cat["score"],
        np.char.upper(cat["entailment_judgment"]) == "ENTAILMENT",
        cat["pair_ID"],
        cat["split"],
        spec.triplets,
        seed,
        key,
        spec.path,
    )


def load_scored_pairs(spec: ScoredPairsData, seed: int) -> TextCorpus:
    """A CSV/TSV of two text columns and a numeric score, split by a column or fractions."""
    path = resolve_data_path(spec.path)
    columns = [spec.text_a_column, spec.text_b_column, spec.score_column]
    optional = [spec.id_column, spec.entailment_column, spec.split_column]
    columns += [c for c in optional if c is not None and c not in columns]
    values, lines = read_table(path, spec.path, columns, _delimiter(path, spec.delimiter))
    _check_texts(spec.path, values, lines, [spec.text_a_column, spec.text_b_column])
    scores = _parse_scores(spec.path, values[spec.score_column], lines, spec.score_column)
    n = lines.size
    if spec.split_column is not None:
        raw = np.char.lower(values[spec.split_column])
        raw = np.where(np.isin(raw, ["valid", "validation", "dev", "trial"]), "val", raw)
        bad = ~np.isin(raw, SPLITS)
        if bad.any():
            i = int(np.argmax(bad))
            raise _text_error(
                spec.path,
                int(lines[i]),
                spec.split_column,
                f"{str(values[spec.split_column][i])!r} is not a split; use train, val or test",
            )
        pair_split = np.select([raw == s for s in SPLITS], [0, 1, 2])
    else:
        index = split_indices({}, n, spec.split, seed)  # type: ignore[arg-type]
        pair_split = np.zeros(n, dtype=np.int64)
        for i, name in enumerate(SPLITS):
            pair_split[index[name].numpy()] = i
    if spec.entailment_column is not None:
        entailed = np.char.upper(values[spec.entailment_column]) == spec.entailment_value.upper()
    else:
        entailed = np.zeros(n, dtype=bool)
    ids = values[spec.id_column] if spec.id_column is not None else (lines - 1).astype(str)
    return _pairs_corpus(
        values[spec.text_a_column],
        values[spec.text_b_column],
        scores,
        entailed,
        ids,
        pair_split,
        spec.triplets,
        seed,
        f"scored_pairs:{spec.path}:{spec.split.model_dump_json()}",
        spec.path,
    )


def _json_triplets(path: Path, rel: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The JSON triplets' fields and the line each triplet starts on."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _text_error(rel, exc.lineno, None, f"not valid JSON: {exc.msg}") from None
    items = data.get("triplets") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise _text_error(rel, 1, "triplets", 'expected {"triplets": [{anchor, positive, '
                            'negative}, ...]} with at least one triplet')  # fmt: skip
    # The line of each triplet object: JSON has no positions, so find each `{` at depth 2.
    starts = _object_lines(text)
    rows: list[list[str]] = []
    for i, item in enumerate(items):
        line = starts[i] if i < len(starts) else None
        if not isinstance(item, dict):
            raise _text_error(rel, line, None, f"triplet {i} is not an object")
        row = []
        for name in TRIPLET_FIELDS:
            value = item.get(name)
            if not isinstance(value, str) or not value.strip():
                what = "missing" if value is None else "empty or not a string"
                raise _text_error(rel, line, name, f"triplet {i}: the field is {what}")
            row.append(value.strip())
        rows.append(row)
    table = np.array(rows, dtype=str)
    lines = np.array([starts[i] if i < len(starts) else 0 for i in range(len(rows))])
    return {name: table[:, j] for j, name in enumerate(TRIPLET_FIELDS)}, lines


def _object_lines(text: str) -> list[int]:
    """1-based lines of the objects that open at bracket depth 2 (the triplets' list items)."""
    depth, line, in_string, escape, out = 0, 1, False, False, []
    for ch in text:
        if ch == "\n":
            line += 1
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if ch == "{" and depth == 3:
                out.append(line)
        elif ch in "}]":
            depth -= 1
    return out


def load_triplets(spec: TripletsData, seed: int) -> TextCorpus:
    """Ready-made triplets (JSON or CSV), split by seeded fractions."""
    path = resolve_data_path(spec.path)
    if path.suffix.lower() == ".json":
        values, lines = _json_triplets(path, spec.path)
    else:
        values, lines = read_table(path, spec.path, list(TRIPLET_FIELDS), _delimiter(path, None))
        _check_texts(spec.path, values, lines, list(TRIPLET_FIELDS))
    texts, rows = _unique_texts(*(values[f] for f in TRIPLET_FIELDS))
    triplets = torch.from_numpy(np.stack(rows, 1)).long()  # [M, 3]
    index = split_indices({}, triplets.size(0), spec.split, seed)
    split = torch.zeros(triplets.size(0), dtype=torch.long)
    for i, name in enumerate(SPLITS):
        split[index[name]] = i
    corpus = TextCorpus(
        texts=texts,
        text_ids=_text_ids(len(texts)),
        triplets=triplets,
        triplet_split=split,
        triplet_source=torch.full_like(split, SOURCE_GIVEN),
        key=f"triplets:{spec.path}:{spec.split.model_dump_json()}:{seed}",
    )
    _check_splits(corpus, spec.path)
    return corpus


class LabeledTextsSource(Protocol):
    """What `load_labeled_texts` reads from a `labeled_texts` data section (its spec lives with
    the family that offers the format: `core.families.dt_gcnn.spec.LabeledTextsData`)."""

    path: str
    text_column: str
    label_column: str
    id_column: str | None
    split_column: str | None
    delimiter: str | None
    split: OwnSplit | FractionsSplit
    triplets_per_anchor: int
    seed: int | None


def label_triplets(
    labels: Tensor, split: Tensor, per_anchor: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Triplets [M, 3] and their split [M] from class labels [T] and the split of each text
    [T]: every text whose class has another text in its split is an anchor `per_anchor` times,
    each with a seeded random positive of its class (never itself) and a seeded random negative
    of another class, both from its split. Vectorised: texts sorted by (split, label), a random
    offset inside the anchor's class block (the positive) and outside it (the negative)."""
    t = labels.numel()
    num_labels = int(labels.max()) + 1 if t else 1
    group = split * num_labels + labels  # [T] one block per (split, label)
    order = torch.argsort(group, stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(t)
    groups = len(SPLITS) * num_labels
    g_count = torch.bincount(group, minlength=groups)
    g_start = torch.cumsum(g_count, 0) - g_count
    s_count = torch.bincount(split, minlength=len(SPLITS))
    s_start = torch.cumsum(s_count, 0) - s_count
    count, start = g_count[group], g_start[group]  # [T] the text's class block
    others = s_count[split] - count  # texts of other classes in the split
    anchors = torch.nonzero((count >= 2) & (others >= 1)).view(-1)
    anchors = anchors.repeat_interleave(per_anchor)  # [M]
    # Positive: an offset in [0, count - 1) inside the block, skipping the anchor's own slot.
    r = (torch.rand(anchors.numel(), generator=gen) * (count[anchors] - 1)).long()
    pos_slot = start[anchors] + r
    pos_slot = pos_slot + (pos_slot >= position[anchors]).long()
    # Negative: an offset in [0, others) over the split's slots, skipping the class block.
    r = (torch.rand(anchors.numel(), generator=gen) * others[anchors]).long()
    neg_slot = s_start[split[anchors]] + r
    neg_slot = neg_slot + (neg_slot >= start[anchors]).long() * count[anchors]
    triplets = torch.stack([anchors, order[pos_slot], order[neg_slot]], 1)
    return triplets, split[anchors]


def hard_label_negatives(
    corpus: TextCorpus, features: Tensor, chunk_size: int = 4096
) -> TextCorpus:
    """`corpus` with each label triplet's negative replaced by a hard one: the anchor's j-th
    triplet takes the j-th most cosine-similar text of another class in its split (`features`
    [T, F], the input features; no labels beyond the anchor's own class). Similarities by
    chunked matmul and `topk` per split; no loop over texts."""
    assert corpus.labels is not None, "hard negatives need class labels"
    triplets = corpus.triplets.clone()
    text_split = torch.full((corpus.num_texts,), -1, dtype=torch.long)
    text_split[triplets[:, 0]] = corpus.triplet_split
    text_split[triplets[:, 1]] = corpus.triplet_split
    text_split[triplets[:, 2]] = corpus.triplet_split
    unit = torch.nn.functional.normalize(features.float().cpu(), dim=1)
    labels = corpus.labels
    # The rank j of each triplet among its anchor's (anchors are repeated consecutively).
    anchor = triplets[:, 0]
    first = torch.ones_like(anchor, dtype=torch.bool)
    first[1:] = anchor[1:] != anchor[:-1]
    run_start = torch.cummax(torch.where(first, torch.arange(anchor.numel()), 0), 0).values
    rank = torch.arange(anchor.numel()) - run_start
    for s in range(len(SPLITS)):  # three splits, not texts
        rows = torch.nonzero(text_split == s).view(-1)  # the split's texts
        in_split = torch.nonzero(corpus.triplet_split == s).view(-1)
        if in_split.numel() == 0:
            continue
        k = min(int(rank[in_split].max()) + 1, rows.numel())
        local = torch.searchsorted(rows, triplets[in_split, 0])
        anchors = torch.unique(local)
        best = torch.empty(anchors.numel(), k, dtype=torch.long)
        for c in range(0, anchors.numel(), chunk_size):  # chunks of anchors: memory [c, n]
            a = anchors[c : c + chunk_size]
            sim = unit[rows[a]] @ unit[rows].T  # [c, n]
            same = labels[rows[a]][:, None] == labels[rows][None, :]
            best[c : c + chunk_size] = sim.masked_fill(same, -torch.inf).topk(k, dim=1).indices
        which = torch.searchsorted(anchors, local)
        j = rank[in_split].clamp(max=k - 1)
        triplets[in_split, 2] = rows[best[which, j]]
    out = TextCorpus(**{**corpus.__dict__, "triplets": triplets})
    out.triplet_source = torch.full_like(corpus.triplet_source, SOURCE_HARD)
    return out


def load_labeled_texts(spec: LabeledTextsSource, seed: int) -> TextCorpus:
    """A CSV/TSV of texts with a class label -> triplets within each split (`label_triplets`):
    the same text twice with two labels is an error naming both lines."""
    path = resolve_data_path(spec.path)
    columns = [spec.text_column, spec.label_column]
    optional = [spec.id_column, spec.split_column]
    columns += [c for c in optional if c is not None and c not in columns]
    values, lines = read_table(path, spec.path, columns, _delimiter(path, spec.delimiter))
    _check_texts(spec.path, values, lines, [spec.text_column, spec.label_column])
    texts, (rows,) = _unique_texts(values[spec.text_column])
    label_names, label_index = np.unique(values[spec.label_column], return_inverse=True)
    # One label per text: the first row of each text fixes it; a later row disagreeing is bad.
    first = np.full(len(texts), -1)
    first[rows[::-1]] = np.arange(rows.size)[::-1]
    clash = label_index != label_index[first[rows]]
    if clash.any():
        i = int(np.argmax(clash))
        raise _text_error(
            spec.path, int(lines[i]), spec.label_column,
            f"the text already has label {str(values[spec.label_column][first[rows[i]]])!r} "
            f"(line {int(lines[first[rows[i]]])}); a text has one label",
        )  # fmt: skip
    labels = torch.from_numpy(label_index[first]).long()  # [T]
    n = len(texts)
    if spec.split_column is not None:
        raw = np.char.lower(values[spec.split_column])
        raw = np.where(np.isin(raw, ["valid", "validation", "dev", "trial"]), "val", raw)
        bad = ~np.isin(raw, SPLITS)
        if bad.any():
            i = int(np.argmax(bad))
            raise _text_error(
                spec.path, int(lines[i]), spec.split_column,
                f"{str(values[spec.split_column][i])!r} is not a split", "train, val or test",
            )  # fmt: skip
        split = torch.from_numpy(np.select([raw == s for s in SPLITS], [0, 1, 2])[first]).long()
    else:
        index = split_indices({}, n, spec.split, seed, labels=labels)
        split = torch.zeros(n, dtype=torch.long)
        for i, name in enumerate(SPLITS):
            split[index[name]] = i
    seed = spec.seed if spec.seed is not None else seed
    gen = torch.Generator().manual_seed(seed)
    triplets, t_split = label_triplets(labels, split, spec.triplets_per_anchor, gen)
    ids = values[spec.id_column][first] if spec.id_column is not None else _text_ids(n)
    if spec.id_column is not None and np.unique(ids).size != n:
        dup = np.unique(ids, return_counts=True)
        name = str(dup[0][np.argmax(dup[1] > 1)])
        line = int(lines[np.flatnonzero(values[spec.id_column] == name)[1]])
        raise _text_error(spec.path, line, spec.id_column, f"the id {name!r} is repeated")
    corpus = TextCorpus(
        texts=texts,
        text_ids=ids,
        triplets=triplets,
        triplet_split=t_split,
        triplet_source=torch.full_like(t_split, SOURCE_RANDOM),
        labels=labels,
        label_names=label_names,
        key=f"labeled_texts:{spec.path}:{spec.split.model_dump_json()}:{seed}",
    )
    if not (t_split == 0).any():
        raise ValueError(
            f"{spec.path}: no training triplets: no class of the train split has two texts and "
            "another class beside it; give more texts per class or a larger train fraction"
        )
    _check_splits(corpus, spec.path)
    return corpus


def load_texts(spec: TextData | LabeledTextsSource, seed: int) -> TextCorpus:
    """The corpus `spec` (a `data` section of `core.spec.texts`, or `labeled_texts`)
    describes."""
    if isinstance(spec, SickData):
        return load_sick(spec, seed)
    if isinstance(spec, ScoredPairsData):
        return load_scored_pairs(spec, seed)
    if isinstance(spec, TripletsData):
        return load_triplets(spec, seed)
    if getattr(spec, "format", None) == "labeled_texts":
        return load_labeled_texts(spec, seed)
    raise ValueError(f"unknown text data format {getattr(spec, 'format', spec)!r}")


__all__ = [
    "SOURCE_NAMES",
    "LabeledTextsSource",
    "hard_label_negatives",
    "label_triplets",
    "load_labeled_texts",
    "TextCorpus",
    "TextDataError",
    "derive_triplets",
    "join_on_anchor",
    "load_scored_pairs",
    "load_sick",
    "load_texts",
    "load_triplets",
    "read_table",
]
