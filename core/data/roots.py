"""Where datasets live: the data roots (read-only) and the cache directory (writable).

`TRAINCTL_DATA_ROOT` is an `os.pathsep`-separated list of directories searched in order; without
it, `../shared/data` beside the repository is used when it exists. Processed tensors go to
`TRAINCTL_CACHE_DIR` (default `~/.cache/trainctl`), never into a data root.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]
_DEFAULT_DATA_ROOT = _REPO_ROOT.parent / "shared" / "data"


class DatasetNotFound(FileNotFoundError):
    """A dataset path that is under none of the data roots; the message lists every place tried."""

    def __init__(self, relative: str, tried: list[Path], expect: str | None = None):
        self.relative = relative
        self.tried = tried
        what = f"{relative!r}" + (f" (with {expect!r} inside)" if expect else "")
        if tried:
            where = "; looked in: " + ", ".join(str(p) for p in tried)
        else:
            where = "; no data root is configured (set TRAINCTL_DATA_ROOT)"
        super().__init__(f"dataset {what} not found{where}")


def data_roots() -> list[Path]:
    """The data roots, in search order."""
    env = os.environ.get("TRAINCTL_DATA_ROOT")
    if env is not None:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return [_DEFAULT_DATA_ROOT] if _DEFAULT_DATA_ROOT.is_dir() else []


def cache_dir() -> Path:
    """The writable cache directory for processed datasets (created on first use)."""
    path = Path(os.environ.get("TRAINCTL_CACHE_DIR") or "~/.cache/trainctl").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_relative(relative: str) -> PurePosixPath:
    """`relative` as a path, or a ValueError if it is absolute or climbs out with `..`."""
    text = relative.replace("\\", "/")
    path = PurePosixPath(text)
    if not text.strip() or path.is_absolute() or ".." in path.parts or ":" in text:
        raise ValueError(
            f"data path {relative!r} must be relative to the data root, without '..' "
            "(e.g. 'MUTAG/raw')"
        )
    return path


def resolve_data_path(relative: str, expect: str | None = None) -> Path:
    """The first `<root>/<relative>` that exists (holding `expect`, if given), else
    `DatasetNotFound` naming every place tried."""
    rel = check_relative(relative)
    tried = []
    for root in data_roots():
        candidate = root / rel
        tried.append(candidate)
        if candidate.exists() and (expect is None or (candidate / expect).exists()):
            log.debug("resolved %s -> %s", relative, candidate)
            return candidate
    raise DatasetNotFound(relative, tried, expect)


__all__ = ["DatasetNotFound", "cache_dir", "check_relative", "data_roots", "resolve_data_path"]
