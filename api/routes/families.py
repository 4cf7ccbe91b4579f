"""Families: their names, and the JSON Schema of each family's spec (the seed's
`Trainer.schema`). No API key needed: a schema describes the service, not anyone's jobs.

The schemas come from the families' spec models (`core.spec`, torch-free), so this route never
imports the training stack."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from core.spec import family_names, family_schema

router = APIRouter(prefix="/families", tags=["families"])


class FamiliesPublic(BaseModel):
    """The registered families' names (the values of a spec's `family`)."""

    data: list[str]
    count: int


@router.get("")
def list_families() -> FamiliesPublic:
    """The families a job spec can name."""
    names = list(family_names())
    return FamiliesPublic(data=names, count=len(names))


@router.get("/{family}/schema")
def get_family_schema(family: str) -> dict[str, Any]:
    """The JSON Schema of `family`'s spec (`model_json_schema()` of its spec model); 404 with
    the families there are for an unknown one."""
    try:
        return family_schema(family)
    except ValueError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
