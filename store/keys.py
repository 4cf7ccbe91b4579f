"""Owners and their API keys. A key is shown once; the store keeps its prefix and sha256."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from store.models import ApiKey, Owner, utcnow

KEY_PREFIX = "tc_"
PREFIX_LEN = 12  # "tc_" and 9 random characters: the lookup part of a key
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class OwnerRef:
    """Who a key belongs to: a plain value, not a row bound to a session."""

    id: int
    name: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_owner(session: Session, owner_name: str) -> Owner:
    """The owner called `owner_name`, created if missing."""
    if not NAME_PATTERN.fullmatch(owner_name):
        raise ValueError(
            f"owner name {owner_name!r} must match {NAME_PATTERN.pattern} "
            "(letters, digits, '_', '.', '-'; at most 64)"
        )
    owner = session.scalar(select(Owner).where(Owner.name == owner_name))
    if owner is None:
        owner = Owner(name=owner_name)
        session.add(owner)
        session.flush()
    return owner


def create_owner_key(session: Session, owner_name: str) -> str:
    """A new API key for `owner_name` (created if missing); the caller shows it once."""
    owner = get_or_create_owner(session, owner_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(owner_id=owner.id, prefix=key[:PREFIX_LEN], key_hash=hash_key(key)))
    session.flush()
    return key


# Built once: every API request runs it.
_KEY_OWNER = (
    select(ApiKey.key_hash, Owner.id, Owner.name)
    .join(Owner, Owner.id == ApiKey.owner_id)
    .where(ApiKey.prefix == bindparam("prefix"), ApiKey.revoked_at.is_(None))
)


def authenticate(session: Session, key: str) -> OwnerRef | None:
    """The owner of a valid, unrevoked key, else None."""
    if not key.startswith(KEY_PREFIX) or len(key) <= PREFIX_LEN:
        return None
    row = session.execute(_KEY_OWNER, {"prefix": key[:PREFIX_LEN]}).first()
    if row is None or not hmac.compare_digest(row.key_hash, hash_key(key)):
        return None
    return OwnerRef(row.id, row.name)


def revoke_key(session: Session, key_or_prefix: str) -> bool:
    """Revoke the key with this prefix (a whole key works too); False if none was active."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == key_or_prefix[:PREFIX_LEN], ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount == 1


@dataclass(frozen=True)
class KeyInfo:
    """An API key as `trainctl keys list` shows it: never the key itself."""

    prefix: str
    owner: str
    created_at: datetime
    revoked_at: datetime | None


def list_keys(session: Session, owner_name: str | None = None) -> list[KeyInfo]:
    """Every key (or one owner's), oldest first, revoked ones included."""
    stmt = select(ApiKey.prefix, Owner.name, ApiKey.created_at, ApiKey.revoked_at).join(
        Owner, Owner.id == ApiKey.owner_id
    )
    if owner_name is not None:
        stmt = stmt.where(Owner.name == owner_name)
    rows = session.execute(stmt.order_by(ApiKey.created_at, ApiKey.id)).all()
    return [KeyInfo(*row) for row in rows]
