"""Text pair and triplet corpora: read, validate, split and derive (anchor, positive, negative)
triplets, for `data.format` `sick`, `scored_pairs` and `triplets` (`core.spec.texts`).

Every file error (a missing column, an empty text, a score that is not a number, a triplet
without one of its fields) raises `TextDataError`, a ValueError naming the file (relative to the
data root), the line and the column. Parsing reads line by line; everything after it (text
deduplication, validation, triplet derivation) is vectorised over numpy / torch arrays.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.data.errors import DataError
from core.data.roots import resolve_data_path
from core.data.splits import SPLITS, split_indices
from core.spec.texts import ScoredPairsData, SickData, TextData, TripletDerivation, TripletsData

log = logging.getLogger(__name__)

SICK_FILES = {"train": "SICK_train.txt", "val": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
SICK_COLUMNS = ("pair_ID", "sentence_A", "sentence_B", "relatedness_score", "entailment_judgment")
TRIPLET_FIELDS = ("anchor", "positive", "negative")
# Where a triplet came from (`TextCorpus.triplet_source`).
SOURCE_GIVEN, SOURCE_PARTNER, SOURCE_RANDOM = 0, 1, 2
SOURCE_NAMES = ("given", "partner", "random")
_RESAMPLE_ROUNDS = 16  # redraws of random negatives that hit a partner of the anchor


class TextDataError(DataError):
    """A bad text data file: `file` (relative to the data root), `line` (1-based, the header
    is line 1) and `column` (a column or field name) say where."""

    def __init__(
        self,
        file: str,
        line: int | None,
        column: str | None,
        message: str,
        allowed: str | None = None,
    ):
        super().__init__(file, message, line=line, column=column, allowed=allowed)


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
    """The named `columns` of a delimited file with a header (as str arrays, stripped) and
    the line number of each row; TextDataError for a missing column or a short row."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        fh = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise TextDataError(rel, None, None, f"cannot be read: {exc.strerror}") from None
    with fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise TextDataError(rel, 1, None, "the file is empty (no header)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TextDataError(rel, 1, None, f"not readable as text: {exc}") from None
        missing = [c for c in columns if c not in header]
        if missing:
            raise TextDataError(
                rel, 1, missing[0], f"no such column; the header has {', '.join(header)}"
            )
        where = [header.index(c) for c in columns]
        needed = max(where) + 1
        rows: list[list[str]] = []
        lines: list[int] = []
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) < needed:
                    short = next(c for c, w in zip(columns, where, strict=True) if w >= len(row))
                    raise TextDataError(
                        rel, reader.line_num, short, f"the row has {len(row)} fields, no value here"
                    )
                rows.append([row[w] for w in where])
                lines.append(reader.line_num)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TextDataError(rel, reader.line_num, None, f"not readable: {exc}") from None
    if not rows:
        raise TextDataError(rel, 2, None, "the file has a header but no rows")
    table = np.array(rows, dtype=str)  # [R, C]
    values = {c: np.char.strip(table[:, i]) for i, c in enumerate(columns)}
    return values, np.array(lines)


def _check_texts(rel: str, values: dict[str, np.ndarray], lines: np.ndarray, cols: list[str]):
    """TextDataError at the first empty text of `cols` (in file order)."""
    empty = np.stack([np.char.str_len(values[c]) == 0 for c in cols], 1)  # [R, C]
    if empty.any():
        row, col = np.argwhere(empty)[0]
        raise TextDataError(rel, int(lines[row]), cols[col], "the text is empty")


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
                raise TextDataError(
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
            raise TextDataError(
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
        raise TextDataError(rel, exc.lineno, None, f"not valid JSON: {exc.msg}") from None
    items = data.get("triplets") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise TextDataError(rel, 1, "triplets", 'expected {"triplets": [{anchor, positive, '
                            'negative}, ...]} with at least one triplet')  # fmt: skip
    # The line of each triplet object: JSON has no positions, so find each `{` at depth 2.
    starts = _object_lines(text)
    rows: list[list[str]] = []
    for i, item in enumerate(items):
        line = starts[i] if i < len(starts) else None
        if not isinstance(item, dict):
            raise TextDataError(rel, line, None, f"triplet {i} is not an object")
        row = []
        for name in TRIPLET_FIELDS:
            value = item.get(name)
            if not isinstance(value, str) or not value.strip():
                what = "missing" if value is None else "empty or not a string"
                raise TextDataError(rel, line, name, f"triplet {i}: the field is {what}")
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


def load_texts(spec: TextData, seed: int) -> TextCorpus:
    """The corpus `spec` (a `data` section of `core.spec.texts`) describes."""
    if isinstance(spec, SickData):
        return load_sick(spec, seed)
    if isinstance(spec, ScoredPairsData):
        return load_scored_pairs(spec, seed)
    if isinstance(spec, TripletsData):
        return load_triplets(spec, seed)
    raise ValueError(f"unknown text data format {getattr(spec, 'format', spec)!r}")


__all__ = [
    "SOURCE_NAMES",
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
