"""Sweeps: one base spec expanded into the members of a job group.

A sweep names dotted spec keys and the values each takes (the seed's `!sweep`,
`!coupled-sweep` and `!range` tags, as plain keys):

```yaml
sweep:
  grid:                                  # the cartesian product of these axes
    data.split.fold: {range: [0, 10]}    # 0, 1, ..., 9 (stop excluded, step 1)
    optimizer.lr: [0.001, 0.0003]
  zip:                                   # each block's lists go together, item by item ...
    - {model.layers: [2, 3], model.channels: [128, 64]}
```

... and every zip block is crossed with the grid: here 10 x 2 x 2 = 40 members. Member `i` is
the base spec with the values of combination `i` set (`itertools.product` order: the last axis
varies fastest; grid axes in the order given, then the zip blocks). A key's parts are field
names or list indices (`model.encoder.0.out`); missing sections are created.

Everything here is plain Python and pydantic (no torch): the API expands and validates a sweep
before it stores anything. Errors are `SpecError`s whose `loc` starts with `sweep.`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.spec import BaseJobSpec, SpecError, load_spec

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "Member",
    "Sweep",
    "expand",
    "parse_sweep",
    "set_dotted",
    "validate_members",
]

# The API's default cap (`TRAINCTL_MAX_GROUP_MEMBERS`).
DEFAULT_MAX_MEMBERS = 256
# A range longer than this is refused before its values are made (the cap is far lower).
_MAX_AXIS = 1_000_000
_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"
_KEY_RE = re.compile(rf"^{_NAME}(\.({_NAME}|\d+))*$")
# Keys a group cannot vary: it has one family.
_FIXED_KEYS = ("family",)


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep: `grid` axes (key -> values) and `zip` blocks (key -> values, all of one
    length per block). `size` is the number of members."""

    grid: dict[str, list[Any]]
    zip: list[dict[str, list[Any]]]

    @property
    def size(self) -> int:
        return _size([len(v) for v in self.grid.values()], [_block_len(b) for b in self.zip])

    @property
    def keys(self) -> list[str]:
        """Every swept key, grid first."""
        return [*self.grid, *(k for block in self.zip for k in block)]

    def as_dict(self) -> dict[str, Any]:
        """The sweep with its ranges written out, and its keys in expansion order (`keys`: a
        store such as PostgreSQL's JSONB does not keep the order of an object's keys)."""
        return {"grid": self.grid, "zip": self.zip, "keys": self.keys}

    def values(self) -> list[dict[str, Any]]:
        """Each member's `{key: value}`, in member order."""
        axes: list[list[dict[str, Any]]] = [
            [{key: v} for v in values] for key, values in self.grid.items()
        ]
        for block in self.zip:
            keys = list(block)
            axes.append(
                [dict(zip(keys, row, strict=True)) for row in zip(*block.values(), strict=True)]
            )
        return [
            {k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)
        ]


@dataclass(frozen=True)
class Member:
    """One member of an expanded sweep: its index, the values the sweep set, its spec data."""

    index: int
    values: dict[str, Any]
    data: dict[str, Any]


def _block_len(block: Mapping[str, Sequence[Any]]) -> int:
    return len(next(iter(block.values()))) if block else 1


def _size(grid_lengths: Sequence[int], zip_lengths: Sequence[int]) -> int:
    return math.prod(grid_lengths) * math.prod(zip_lengths)


def parse_sweep(data: Any, max_members: int | None = DEFAULT_MAX_MEMBERS) -> Sweep:
    """Check a sweep (`{grid: {key: values | {range: [start, stop, step]}}, zip: [{...}]}`),
    write out its ranges and check its size against `max_members` (None: no cap).

    Raises `SpecError` listing every problem: an unknown section, a bad key, an empty or
    non-list axis, a bad range, zip lists of unequal lengths, a key swept twice (or inside
    another swept key), and, alone, a member count over the cap (counted before any value is
    made, so a huge sweep costs nothing)."""
    if not isinstance(data, Mapping):
        raise SpecError([{"loc": "sweep", "msg": "a sweep is a mapping with `grid` and/or `zip`"}])
    errors: list[dict[str, Any]] = []
    unknown = sorted(set(data) - {"grid", "zip"})
    for key in unknown:
        errors.append(
            {"loc": f"sweep.{key}", "msg": "unknown field; allowed: grid, zip",
             "allowed": ["grid", "zip"]}
        )  # fmt: skip
    raw_grid = data.get("grid") or {}
    raw_zip = data.get("zip") or []
    if not isinstance(raw_grid, Mapping):
        errors.append({"loc": "sweep.grid", "msg": "a mapping of dotted.key: values"})
        raw_grid = {}
    if not isinstance(raw_zip, list):
        errors.append({"loc": "sweep.zip", "msg": "a list of mappings of dotted.key: values"})
        raw_zip = []
    if not raw_grid and not raw_zip and not errors:
        errors.append({"loc": "sweep", "msg": "empty: give `grid` and/or `zip` axes"})

    # First pass: lengths only (ranges are not made yet), so the cap is checked for free.
    grid_axes: dict[str, Any] = {}
    grid_lengths: list[int] = []
    for key, spec in raw_grid.items():
        loc = f"sweep.grid.{key}"
        n = _axis_len(spec, loc, errors)
        if _check_key(key, loc, errors) and n is not None:
            grid_axes[key] = spec
            grid_lengths.append(n)
    zip_blocks: list[dict[str, Any]] = []
    zip_lengths: list[int] = []
    for b, block in enumerate(raw_zip):
        loc = f"sweep.zip.{b}"
        if not isinstance(block, Mapping) or not block:
            errors.append({"loc": loc, "msg": "a non-empty mapping of dotted.key: values"})
            continue
        lengths: dict[str, int] = {}
        for key, spec in block.items():
            n = _axis_len(spec, f"{loc}.{key}", errors)
            if _check_key(key, f"{loc}.{key}", errors) and n is not None:
                lengths[key] = n
        if len(lengths) != len(block):
            continue
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            errors.append(
                {"loc": loc, "msg": f"the lists of a zip block go together and must have one "
                 f"length; got {shown}"}
            )  # fmt: skip
            continue
        zip_blocks.append(dict(block))
        zip_lengths.append(next(iter(lengths.values())))
    errors.extend(_overlaps([*grid_axes, *(k for block in zip_blocks for k in block)]))
    if errors:
        raise SpecError(errors)

    size = _size(grid_lengths, zip_lengths)
    if max_members is not None and size > max_members:
        raise SpecError(
            [{"loc": "sweep", "msg": f"the sweep has {size} members; the cap is {max_members}",
              "count": size, "cap": max_members}]
        )  # fmt: skip
    return Sweep(
        grid={k: _axis_values(v) for k, v in grid_axes.items()},
        zip=[{k: _axis_values(v) for k, v in block.items()} for block in zip_blocks],
    )


def _check_key(key: Any, loc: str, errors: list[dict[str, Any]]) -> bool:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        errors.append(
            {"loc": loc, "msg": f"bad key {key!r}: dotted field names and list indices, "
             "e.g. data.split.fold or model.encoder.0.out"}
        )  # fmt: skip
        return False
    if key.split(".")[0] in _FIXED_KEYS:
        errors.append({"loc": loc, "msg": "a group has one family; sweep other keys"})
        return False
    return True


def _overlaps(keys: list[str]) -> list[dict[str, Any]]:
    """A key swept twice, or a key inside another swept key (`model` and `model.layers`)."""
    errors = []
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            errors.append({"loc": f"sweep.{key}", "msg": "swept twice (in grid and zip, or two "
                           "zip blocks); each key is swept once"})  # fmt: skip
        seen.add(key)
    for key in sorted(seen):
        for other in sorted(seen):
            if other != key and other.startswith(key + "."):
                errors.append(
                    {"loc": f"sweep.{other}",
                     "msg": f"inside the swept key {key!r}; sweep one or the other"}
                )  # fmt: skip
    return errors


def _axis_len(spec: Any, loc: str, errors: list[dict[str, Any]]) -> int | None:
    """The number of values of an axis (a list, or `{range: [start, stop, step]}`); None (and
    an error) if it is not one."""
    if isinstance(spec, list):
        if not spec:
            errors.append({"loc": loc, "msg": "an empty list of values"})
            return None
        return len(spec)
    if isinstance(spec, Mapping) and set(spec) == {"range"}:
        bounds = _range_bounds(spec["range"], loc, errors)
        return None if bounds is None else _range_len(*bounds)
    errors.append(
        {"loc": loc, "msg": "a list of values, or {range: [start, stop, step]} (stop excluded); "
         f"got {type(spec).__name__}"}
    )  # fmt: skip
    return None


def _range_bounds(
    raw: Any, loc: str, errors: list[dict[str, Any]]
) -> tuple[float, float, float] | None:
    loc = f"{loc}.range"
    if not isinstance(raw, list) or len(raw) not in (2, 3):
        errors.append({"loc": loc, "msg": "[start, stop] or [start, stop, step]"})
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
        errors.append({"loc": loc, "msg": f"numbers only; got {raw}"})
        return None
    try:
        finite = all(math.isfinite(v) for v in raw)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        errors.append({"loc": loc, "msg": f"finite numbers of a float's range only; got {raw}"})
        return None
    start, stop, step = (*raw, 1) if len(raw) == 2 else raw
    if step == 0:
        errors.append({"loc": loc, "msg": "step must not be 0"})
        return None
    try:
        n = _range_len(start, stop, step)
    except OverflowError:  # (stop - start) / step beyond a float
        n = _MAX_AXIS + 1
    if n <= 0:
        errors.append(
            {"loc": loc, "msg": f"range {raw} gives no values (stop is excluded; a negative "
             "step counts down)"}
        )  # fmt: skip
        return None
    if n > _MAX_AXIS:
        errors.append(
            {"loc": loc, "msg": f"range {raw} gives over {_MAX_AXIS:,} values; far over any cap"}
        )
        return None
    return start, stop, step


def _range_len(start: float, stop: float, step: float) -> int:
    """numpy.arange's count, robust to float steps: [0, 1, 0.1] has 10 values, not 11."""
    if all(isinstance(v, int) for v in (start, stop, step)):
        # len(range(...)) without building one (it overflows a C ssize_t for huge bounds).
        if step > 0:
            return max(0, (stop - start + step - 1) // step)
        return max(0, (start - stop - step - 1) // -step)
    span = (stop - start) / step
    if not math.isfinite(span):
        raise OverflowError(span)
    return max(0, math.ceil(span - 1e-9 * max(1.0, abs(span))))


def _axis_values(spec: Any) -> list[Any]:
    if isinstance(spec, list):
        return list(spec)
    raw = spec["range"]
    start, stop, step = (*raw, 1) if len(raw) == 2 else raw
    if all(isinstance(v, int) for v in (start, stop, step)):
        return list(range(start, stop, step))
    n = _range_len(start, stop, step)
    # start + i * step (not a running sum: no drift), rounded to 12 significant digits so
    # 0.1 * 3 is 0.3, not 0.30000000000000004.
    return [float(f"{start + i * step:.12g}") for i in range(n)]


def set_dotted(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with `key` (`a.b.0.c`) set to `value`: only the mappings and lists on
    the key's path are copied; missing sections are created. ValueError naming the key if the
    path runs through a value that is not a section, or a list index is out of range."""
    parts = key.split(".")
    root: dict[str, Any] = dict(data)
    node: Any = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth]) or "<spec>"
        if isinstance(node, dict):
            if last:
                node[part] = value
                break
            child = node.get(part)
            if child is None:
                child = {}
            elif isinstance(child, dict | list):
                child = child.copy()
            else:
                raise ValueError(
                    f"{key}: {'.'.join(parts[: depth + 1])} is a value "
                    f"({type(child).__name__}), not a section"
                )
            node[part] = child
            node = child
        elif isinstance(node, list):
            if not part.isdigit():
                raise ValueError(f"{key}: {where} is a list; {part!r} is not an index")
            index = int(part)
            if index >= len(node):
                raise ValueError(
                    f"{key}: index {index} out of range; {where} has {len(node)} items"
                )
            if last:
                node[index] = value
                break
            child = node[index]
            if not isinstance(child, dict | list):
                raise ValueError(
                    f"{key}: {where}.{index} is a value ({type(child).__name__}), not a section"
                )
            child = child.copy()
            node[index] = child
            node = child
    return root


def expand(base: Mapping[str, Any], sweep: Sweep) -> tuple[list[Member], list[dict[str, Any]]]:
    """The members of `sweep` over the spec data `base` (parsed, unvalidated), and the errors
    of members whose keys could not be set (`{index, values, errors}`, as `validate_members`)."""
    members: list[Member] = []
    failures: list[dict[str, Any]] = []
    for index, values in enumerate(sweep.values()):
        data: dict[str, Any] = dict(base)
        errors = []
        for key, value in values.items():
            try:
                data = set_dotted(data, key, value)
            except ValueError as exc:
                errors.append({"loc": key, "msg": str(exc)})
        if errors:
            failures.append({"index": index, "values": values, "errors": errors})
        members.append(Member(index, values, data))
    return members, failures


def validate_members(
    base: Mapping[str, Any], sweep: Sweep
) -> tuple[list[tuple[Member, BaseJobSpec]], list[dict[str, Any]]]:
    """Expand `sweep` over `base` and validate every member with `load_spec` (the loader of a
    single job). Returns the valid members with their specs, and every invalid member as
    `{index, values, errors}` (errors: `SpecError.errors`, `{loc, msg, allowed?}`), in member
    order. Nothing is stored here; a caller stores the group only if there are no failures."""
    members, failures = expand(base, sweep)
    bad = {f["index"] for f in failures}
    valid = []
    for member in members:
        if member.index in bad:
            continue
        try:
            valid.append((member, load_spec(member.data)))
        except SpecError as exc:
            failures.append({"index": member.index, "values": member.values, "errors": exc.errors})
    failures.sort(key=lambda f: f["index"])
    return valid, failures
