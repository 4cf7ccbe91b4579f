"""Job specs: one Pydantic model per family, selected by the `family` field.

`load_spec` reads YAML or JSON text (or a dict), applies `--set dotted.key=value` overrides and
validates everything at once; a bad spec raises `SpecError`, whose `errors` name each bad field
with the allowed values. Importing this package never imports torch.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from functools import cache, reduce
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import BaseModel, Discriminator, Field, Tag, TypeAdapter, ValidationError

from core.spec.common import EARLY_STOPPING_FORMS, BaseJobSpec

__all__ = [
    "BaseJobSpec",
    "SpecError",
    "apply_overrides",
    "dump_spec",
    "family_names",
    "family_schema",
    "load_spec",
    "parse_spec_text",
    "spec_models",
]


def spec_models() -> tuple[type[BaseJobSpec], ...]:
    """Every registered family's spec model, from the family registry (`core.families`)."""
    from core.families import families  # torch-free; imported late: family specs import us

    return tuple(f.spec for f in families().values())


def family_names() -> tuple[str, ...]:
    return tuple(m.family_name() for m in spec_models())


@cache
def _adapter() -> TypeAdapter[Any]:
    """The discriminated union of every family's spec, selected by `family`."""
    union = reduce(lambda a, b: a | b, spec_models())  # type: ignore[arg-type, return-value]
    return TypeAdapter(Annotated[union, Field(discriminator="family")])


def family_schema(family: str) -> dict[str, Any]:
    """The JSON Schema of `family`'s spec (`model_json_schema()`, the seed's `Trainer.schema`);
    ValueError listing the families if unknown."""
    if family not in family_names():
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(family_names())}")
    return copy.deepcopy(_cached_schema(family))


@cache
def _cached_schema(family: str) -> dict[str, Any]:
    (model,) = [m for m in spec_models() if m.family_name() == family]
    return model.model_json_schema()


class SpecError(ValueError):
    """A spec that cannot be loaded; `errors` is a list of {loc, msg, allowed?} dicts."""

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        lines = [f"{e['loc'] or '<spec>'}: {e['msg']}" for e in errors]
        super().__init__("invalid spec:\n  " + "\n  ".join(lines))


# Deeper than any spec needs (the deepest section is a few levels): refused before it is
# built, so a small hostile text cannot cost seconds of parsing or a RecursionError.
MAX_SPEC_DEPTH = 32
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where it is built in


# The seed's sweep tags: a spec is one job; several values of a field make a job group.
SWEEP_TAGS = frozenset({"!sweep", "!coupled-sweep", "!coupled_sweep", "!range"})
_YAML_TAG_PREFIX = "tag:yaml.org,2002:"  # written `!!` in a document
MAX_TAGS = 20  # tags reported one by one; the rest are counted


def _check_events(text: str | bytes) -> None:
    """Scan the YAML event stream once, before anything is built: no aliases, no tags (a tag
    such as `!pyobject` names Python, which a spec never does), at most MAX_SPEC_DEPTH levels.
    Errors name the field (`model.encoder.0.layer`) and the line; every tag is reported at
    once, each with the values its field allows where the family's schema lists them."""
    stack: list[list[Any]] = []  # per open collection: [is_mapping, key or index, awaiting key]
    tagged: list[tuple[list[Any], int, str]] = []  # (field path, line, tag as written)
    family: str | None = None

    def path() -> list[Any]:
        return [frame[1] for frame in stack if frame[1] is not None]

    def refuse(event: Any, msg: str) -> None:
        loc = ".".join(map(str, path()))
        line = event.start_mark.line + 1
        raise SpecError([{"loc": loc, "msg": f"line {line}: {msg}", "line": line}])

    for event in yaml.parse(text, Loader=_SAFE_LOADER):
        if not isinstance(event, yaml.NodeEvent):
            if isinstance(event, yaml.CollectionEndEvent):
                stack.pop()
                if stack and stack[-1][0]:
                    stack[-1][2] = True  # the mapping's value ended: a key comes next
            continue
        top = stack[-1] if stack else None
        is_key = top is not None and top[0] and top[2]
        if top is not None and not top[0]:
            top[1] += 1  # the next item of a sequence
        if isinstance(event, yaml.AliasEvent):
            refuse(event, "YAML anchors and aliases are not allowed")
        implicit = getattr(event, "implicit", True)
        implicit = implicit[0] or implicit[1] if isinstance(implicit, tuple) else implicit
        if event.tag and not implicit:
            written = event.tag
            if written.startswith(_YAML_TAG_PREFIX):
                written = "!!" + written.removeprefix(_YAML_TAG_PREFIX)
            where = path()
            if is_key:  # the tag sits on the key itself: the field is that key
                where = [f[1] for f in stack[:-1] if f[1] is not None]
                where.append(getattr(event, "value", "?"))
            tagged.append((where, event.start_mark.line + 1, written))
        if is_key:
            assert top is not None
            top[1], top[2] = getattr(event, "value", "?"), False
            if not isinstance(event, yaml.ScalarEvent):
                refuse(event, "a key must be a plain name")
            continue
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_SPEC_DEPTH:
                refuse(event, f"nested deeper than {MAX_SPEC_DEPTH} levels; a spec is a few")
            is_mapping = isinstance(event, yaml.MappingStartEvent)
            stack.append([is_mapping, None if is_mapping else -1, True])
        elif top is not None and top[0]:
            top[2] = True  # a scalar value: a key comes next
            if len(stack) == 1 and top[1] == "family" and isinstance(event, yaml.ScalarEvent):
                family = event.value
    if tagged:
        errors = [_tag_error(where, line, tag, family) for where, line, tag in tagged[:MAX_TAGS]]
        if len(tagged) > MAX_TAGS:  # a body of many tags gets a short answer
            more = len(tagged) - MAX_TAGS
            errors.append({"loc": "", "msg": f"{more} more YAML tags; a spec has none"})
        raise SpecError(errors)


def _tag_error(where: list[Any], line: int, tag: str, family: str | None) -> dict[str, Any]:
    """The error for `tag` on the field at `where`: sweep tags point to job groups; any other
    tag lists the values the field allows (from the family's JSON Schema) where it has a list."""
    loc = ".".join(map(str, where))
    entry: dict[str, Any] = {"loc": loc, "line": line}
    head = f"line {line}: YAML tag {tag!r} is not allowed"
    if tag in SWEEP_TAGS:
        key = loc or "dotted.key"
        entry["msg"] = (
            f"{head}: a spec is one job with one value per field. To train several values, "
            f"submit a job group: POST /groups with {{spec: <this spec>, sweep: {{grid: "
            f"{{{key}: [v1, v2, ...]}}}}}} ({{range: [start, stop, step]}} in place of a list "
            "for a range; zip: [{key: [...], other.key: [...]}] for keys whose values go "
            "together, the seed's !coupled-sweep), or `trainctl sweep SPEC --grid "
            f"{key}=v1,v2`; see docs/sweeps.md"
        )
        return entry
    allowed, fields = _schema_values(family, where)
    if allowed:
        entry["allowed"] = allowed
        entry["msg"] = (
            f"{head}; names resolve through registries, never Python objects: choose one of "
            f"{', '.join(allowed)}"
        )
    elif fields:
        entry["msg"] = (
            f"{head}; a spec names no Python objects: write this section as a mapping of its "
            f"fields ({', '.join(fields)})"
        )
    else:
        entry["msg"] = (
            f"{head}; a spec names no Python objects: values are plain names, numbers, "
            "strings or lists, and names resolve through registries"
        )
    return entry


def _schema_values(family: str | None, where: list[Any]) -> tuple[list[str], list[str]]:
    """The values (enum or const) the family's JSON Schema allows at `where`, and the fields
    of the section there if it is one; ([], []) where the family or the field is unknown."""
    if family not in family_names():
        return [], []
    schema = _cached_schema(family)
    nodes = _expand(schema, [schema])
    for part in where:
        found = []
        for node in nodes:
            if isinstance(part, int):
                items = node.get("items")
                found += [items] if isinstance(items, dict) else []
            elif part in node.get("properties", {}):
                found.append(node["properties"][part])
            elif isinstance(node.get("additionalProperties"), dict):
                found.append(node["additionalProperties"])
        nodes = _expand(schema, found)
    values: list[str] = []
    for node in nodes:
        for value in [*node.get("enum", []), *([node["const"]] if "const" in node else [])]:
            if str(value) not in values:
                values.append(str(value))
    fields = sorted({name for node in nodes for name in node.get("properties", {})})
    return values, fields


def _expand(schema: dict[str, Any], nodes: list[Any], depth: int = 0) -> list[dict[str, Any]]:
    """`nodes` with `$ref`s resolved and `anyOf`/`oneOf`/`allOf` opened, recursively."""
    out: list[dict[str, Any]] = []
    for node in nodes:
        if not isinstance(node, dict) or depth > 16:
            continue
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"))
            out += _expand(schema, [target], depth + 1)
            continue
        alternatives = [*node.get("anyOf", []), *node.get("oneOf", []), *node.get("allOf", [])]
        if alternatives:
            out += _expand(schema, alternatives, depth + 1)
        else:
            out.append(node)
    return out


def check_depth(data: Any, limit: int = MAX_SPEC_DEPTH) -> None:
    """Raise SpecError if `data` (parsed JSON) nests deeper than `limit` (iteratively: a deep
    object cannot exhaust the stack here)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                raise SpecError(
                    [{"loc": "", "msg": f"nested deeper than {limit} levels; a spec is a few "
                      "levels deep"}]
                )  # fmt: skip
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)


def parse_spec_text(text: str | bytes) -> dict[str, Any]:
    """Parse YAML or JSON (JSON is YAML) safely: no tags, no Python objects, no anchors or
    aliases (a small text could otherwise expand exponentially), at most MAX_SPEC_DEPTH levels
    (checked on the event stream before anything is built)."""
    try:
        _check_events(text)
        data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise SpecError([{"loc": "", "msg": f"not valid YAML or JSON: {exc}"}]) from None
    except RecursionError:
        raise SpecError([{"loc": "", "msg": "nested too deeply"}]) from None
    if not isinstance(data, dict):
        raise SpecError(
            [{"loc": "", "msg": f"a spec is a mapping of sections, got {type(data).__name__}"}]
        )
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set `dotted.key=value` pairs (values parsed as YAML scalars/lists) on a copy of `data`."""
    out = json.loads(json.dumps(data))
    errors = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            errors.append({"loc": item, "msg": "an override is dotted.key=value"})
            continue
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                errors.append({"loc": key, "msg": f"{part!r} is not a section"})
                break
            node = child
        else:
            try:
                node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError as exc:
                errors.append({"loc": key, "msg": f"value is not valid YAML: {exc}"})
    if errors:
        raise SpecError(errors)
    return out


def _allowed_fields(loc: tuple[Any, ...], data: Any) -> list[str] | None:
    """The field names allowed where `loc` points, by walking the family model along `loc`."""
    model: type[BaseModel] | None = _pick_model(spec_models(), data)
    node = data
    candidates: list[type[BaseModel]] = []
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list section: pick its model by the item
            node = node[part] if isinstance(node, list) and part < len(node) else None
            model = _pick_model(candidates, node)
            continue
        fields = _fields_by_key(model) if model is not None else {}
        if part not in fields:
            return None
        node = node.get(part) if isinstance(node, dict) else None
        annotation = fields[part].annotation
        candidates = [
            a for a in _flatten(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        model = _pick_model(candidates, node) or _pick_by_discriminator(annotation, node)
    return sorted(_fields_by_key(model)) if model is not None else None


def _fields_by_key(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key a spec writes (the alias where there is one: `in`, not
    `in_`)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _pick_model(models: Iterable[type[BaseModel]], node: Any) -> type[BaseModel] | None:
    """The one model of a (discriminated) union that `node` selects, if any."""
    models = list(models)
    if len(models) == 1:
        return models[0]
    for model in models:
        for name, field in model.model_fields.items():
            tags = get_args(field.annotation)
            if (
                isinstance(node, dict)
                and tags
                and len(tags) == 1  # a union's tag field is a one-value Literal
                and node.get(name) == tags[0]
            ):
                return model
    return None


def _pick_by_discriminator(annotation: Any, node: Any) -> type[BaseModel] | None:
    """The model a callable `Discriminator` (`early_stopping`'s forms) selects for `node`."""
    if get_origin(annotation) is Annotated:
        inner, *metadata = get_args(annotation)
        for meta in metadata:
            if isinstance(meta, Discriminator) and callable(meta.discriminator):
                tag = meta.discriminator(node)
                for option in get_args(inner):
                    option_args = get_args(option) if get_origin(option) is Annotated else ()
                    if any(isinstance(m, Tag) and m.tag == tag for m in option_args[1:]):
                        return option_args[0]
        return _pick_by_discriminator(inner, node)
    for arg in get_args(annotation):
        found = _pick_by_discriminator(arg, node)
        if found is not None:
            return found
    return None


def _flatten(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    if not args:
        return [annotation]
    return [leaf for arg in args for leaf in _flatten(arg)]


def _clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop the union tags pydantic inserts into a location (`data.planetoid.name`)."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and part in node.values():
            continue  # a tag such as the value of `family` or `format`
        if isinstance(node, dict) and part not in node and part in EARLY_STOPPING_FORMS:
            continue  # the tag of a union selected by a function (`early_stopping`'s forms)
        out.append(part)
        node = (
            node.get(part)
            if isinstance(node, dict)
            else (
                node[part]
                if isinstance(node, list) and isinstance(part, int) and part < len(node)
                else None
            )
        )
    return tuple(out)


def _format_errors(exc: ValidationError, data: Any) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]), data)
        ctx = err.get("ctx") or {}
        msg = err["msg"].removeprefix("Value error, ")
        entry: dict[str, Any] = {"loc": ".".join(map(str, loc)), "msg": msg}
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(loc, data)
            if allowed:
                entry["allowed"] = allowed
                entry["msg"] = f"unknown field; allowed: {', '.join(allowed)}"
        elif err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            tag = str(ctx.get("discriminator", "")).strip("'")
            entry["loc"] = ".".join([*map(str, loc), tag])
            if err["type"] == "union_tag_not_found":
                entry["msg"] = "missing"
            else:
                entry["allowed"] = _split_expected(ctx.get("expected_tags"))
                entry["msg"] = (
                    f"unknown {tag} {ctx.get('tag')!r}; allowed: {', '.join(entry['allowed'])}"
                )
        elif err["type"] == "literal_error":
            entry["allowed"] = _split_expected(ctx.get("expected"))
        errors.append(entry)
    return errors


def _split_expected(expected: Any) -> list[str]:
    text = str(expected or "").replace(" or ", ", ")
    return [v.strip().strip("'") for v in text.split(",") if v.strip()]


def load_spec(
    source: str | bytes | Path | Mapping[str, Any], overrides: Iterable[str] = ()
) -> BaseJobSpec:
    """Load a spec from YAML/JSON text, a file path or a dict; raise `SpecError` if it is bad."""
    if isinstance(source, Path):
        try:
            text = source.read_text()
        except OSError as exc:
            raise SpecError([{"loc": "", "msg": f"cannot read {source}: {exc.strerror}"}]) from None
        data = parse_spec_text(text)
    elif isinstance(source, str | bytes):
        data = parse_spec_text(source)
    else:
        check_depth(source)
        data = dict(source)
    data = apply_overrides(data, overrides)
    if "family" not in data:
        families = list(family_names())
        raise SpecError(
            [
                {
                    "loc": "family",
                    "msg": f"missing; allowed: {', '.join(families)}",
                    "allowed": families,
                }
            ]
        )
    try:
        return _adapter().validate_python(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, data)) from None


def dump_spec(spec: BaseJobSpec) -> str:
    """The spec as YAML, every default written out (what `spec.yaml` in a run holds)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
