"""Error text as a client may see it: no server paths, addresses or tracebacks.

A job's `error` comes from the training process (`error.json`: a `DatasetNotFound` naming the
folders it looked in), from the log's last lines, or from the worker itself. What a client sees
names files relative to the places it knows (its own uploads, the data root, the job's run
directory); every other absolute path, URL and traceback frame is replaced by a placeholder.
The full text goes to the log (the worker logs it before it stores the redacted one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from store.settings import Settings

SERVER_PATH = "<server path>"
ADDRESS = "<address>"

# `scheme://...` (a broker or database URL, possibly with a password), up to white space or a
# closing quote/bracket.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>)\]]*")
# An absolute POSIX path of two or more parts (`/srv/data/x.csv`, `/home/u`), not inside a
# relative name (`a/b`) or a URL (already replaced); a lone `/` or `/x` is left (a ratio, a unit).
_ABS_PATH = re.compile(r"(?<![\w.\-/<>])/(?:[^\s/'\"<>:,;()\[\]]+/)+[^\s/'\"<>:,;()\[\]]*")
# A Windows path (`C:\\data\\x.csv`).
_WIN_PATH = re.compile(r"\b[A-Za-z]:\\[^\s'\"<>]*")
# Python traceback frames: `File "/x/y.py", line 3, in f` (the path is redacted above; the
# frames themselves say nothing a client can act on).
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):.*?(?=^\S|\Z)", re.S | re.M)
_IP_PORT = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")


def known_places(
    settings: Settings,
    *,
    upload_dir: Path | None = None,
    run_dir: Path | None = None,
    data_roots: Iterable[Path] = (),
) -> list[tuple[Path, str, str]]:
    """(server folder, what a client calls a file in it, what it calls the folder) for the
    folders a message may name: the owner's uploads and the data roots (their files by relative
    name), the job's run directory (its files by relative name), the cache and the service's
    own folders (placeholders)."""
    places: list[tuple[Path, str, str]] = []
    if run_dir is not None:
        places.append((run_dir, "", "the job's run directory"))
    if upload_dir is not None:
        places.append((upload_dir, "", "your uploads"))
    for root in [*settings.data_roots, *data_roots]:
        places.append((root, "", "the data root"))
    cache = os.environ.get("TRAINCTL_CACHE_DIR")
    if cache:
        places.append((Path(cache), "<cache>/", "<cache>"))
    places += [
        (settings.upload_root, "<uploads>/", "<uploads>"),
        (settings.artifact_root, "<runs>/", "<runs>"),
        (settings.home, "<service home>/", "<service home>"),
    ]
    return places


def redact(text: str | None, places: Iterable[tuple[Path, str, str]] = ()) -> str | None:
    """`text` without server internals: each known folder's prefix replaced by what a client
    calls it (longest first), then any other absolute path, URL, IP address and traceback
    replaced by a placeholder. None stays None."""
    if text is None:
        return None
    prefixes: dict[str, tuple[str, str]] = {}
    for folder, shown, bare in places:
        for form in {str(folder), _resolved(folder)}:
            if form and form not in ("/", "."):
                prefixes.setdefault(form.rstrip("/"), (shown, bare))
    out = _TRACEBACK.sub("(traceback in the server log)\n", text)
    for prefix in sorted(prefixes, key=len, reverse=True):
        shown, bare = prefixes[prefix]
        # `prefix/name` -> `shown + name`; the bare folder -> a word for it.
        out = re.sub(re.escape(prefix) + r"/(?=\S)", lambda _m, s=shown: s, out)
        out = re.sub(re.escape(prefix) + r"/?(?![\w.\-])", lambda _m, b=bare: b, out)
    out = _URL.sub(ADDRESS, out)
    out = _WIN_PATH.sub(SERVER_PATH, out)
    out = _ABS_PATH.sub(SERVER_PATH, out)
    out = _IP_PORT.sub(ADDRESS, out)
    return out


def _resolved(folder: Path) -> str:
    try:
        return str(folder.expanduser().resolve())
    except (OSError, RuntimeError):
        return ""
