"""Models from the Hugging Face hub: download only what is needed, convert once, reuse offline.

``bitnet.load("owner/repo")`` goes through :func:`resolve`, which looks in the caches first and
touches the network only for what is not there (like ``ollama run``; :func:`pull` fetches the
latest revision, like ``ollama pull``):

* GGUF repositories (e.g. ``microsoft/bitnet-b1.58-2B-4T-gguf``) download the one ``.gguf``
  file and load it as it is. ``owner/repo/file.gguf`` picks a file in a repository with several.
* Safetensors repositories download config, weights and tokenizer files only (never the
  PyTorch ``.bin`` duplicates), convert them once, and keep the result.

Where things go:

* downloads: huggingface_hub's own cache (``huggingface_hub.constants.HF_HUB_CACHE``: from
  ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), shared with
  every other tool that uses it, and read with huggingface_hub's own functions
  (``try_to_load_from_cache``, ``snapshot_download(local_files_only=True)``, ``scan_cache_dir``);
* converted files: ``$BITNET_CACHE``, else ``$XDG_CACHE_HOME/bitnet``, else
  ``~/.cache/bitnet``, as ``models/<owner>--<repo>/<commit>/<weight type>.gguf``, plus
  ``models/<owner>--<repo>/refs/<revision>`` holding the commit a revision last resolved to.

A cached model needs no network and no setting. With downloads off (``HF_HUB_OFFLINE=1``, or
``offline=True``) anything missing is named in the error; with downloads on but the hub out of
reach, the error says so at once (one connection attempt, not huggingface_hub's retries).
Known checkpoints are listed in the registry shipped with the package (:func:`registry`), with
short names such as ``bitnet-2b4t``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import BitnetError

__all__ = [
    "CachedModel",
    "HubError",
    "RegistryEntry",
    "cache_dir",
    "cached_models",
    "checkpoint_dir",
    "find_model",
    "hf_cache_dir",
    "is_hub_name",
    "pull",
    "registry",
    "remove",
    "resolve",
]

_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/.+\.gguf)?$")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


class HubError(BitnetError):
    """A model could not be fetched from the hub or found in the cache."""


@dataclass(frozen=True)
class RegistryEntry:
    """One known checkpoint: where it lives and what to download.

    Attributes:
        name: Short name accepted by :func:`bitnet.load` (e.g. "bitnet-2b4t").
        repo: Hub repository "owner/name".
        format: "gguf" (load as is) or "safetensors" (converted once).
        files: Files or glob patterns to download.
        tokenizer_repo: Another repository holding the tokenizer, if the model has none.
        tokenizer_files: What to download from tokenizer_repo.
        description: One line for ``bitnet models --known``.
        params: Parameter count, for display.
        chat: Whether the model is chat-tuned (has a chat template).
    """

    name: str
    repo: str
    format: str
    files: tuple[str, ...]
    tokenizer_repo: str | None = None
    tokenizer_files: tuple[str, ...] = field(default=())
    description: str = ""
    params: str = ""
    chat: bool = False


def _registry_path() -> Path:
    """registry.json: installed next to this module, or models/ of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "registry.json", here.parent.parent / "models" / "registry.json"):
        if candidate.is_file():
            return candidate
    raise HubError(f"the model registry is missing from this installation ({here})")


@lru_cache(maxsize=1)
def _registry_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_registry_path().read_text(encoding="utf-8"))
    return data


@lru_cache(maxsize=1)
def registry() -> tuple[RegistryEntry, ...]:
    """The known hub checkpoints (models/registry.json).

    Example:
        >>> [m.name for m in registry()][:2]
        ['bitnet-2b4t', 'bitnet-2b4t-gguf']
    """
    data = _registry_data()
    default_files = tuple(data["default_files"])
    out = []
    for m in data["models"]:
        tok = m.get("tokenizer") or {}
        out.append(
            RegistryEntry(
                name=m["name"],
                repo=m["repo"],
                format=m["format"],
                files=tuple(m.get("files", default_files)),
                tokenizer_repo=tok.get("repo"),
                tokenizer_files=tuple(tok.get("files", ())),
                description=m.get("description", ""),
                params=m.get("params", ""),
                chat=bool(m.get("chat", False)),
            )
        )
    return tuple(out)


def _default_files() -> tuple[str, ...]:
    return tuple(_registry_data()["default_files"])


def find_model(name: str) -> RegistryEntry | None:
    """The registry entry with this short name or repository (case-insensitive), if any."""
    key = name.lower()
    for m in registry():
        if key in (m.name.lower(), m.repo.lower()):
            return m
    return None


def is_hub_name(name: str) -> bool:
    """Whether name reads as a hub model rather than a local path.

    Hub names are "owner/repo", "owner/repo/file.gguf" and registry names. Existing paths,
    absolute or explicitly relative paths ("./x", "~/x"), "dir/file.gguf", and names whose
    first folder exists here ("models/x" when ./models exists) are local.
    """
    if Path(name).exists() or name.startswith(("/", ".", "~", "\\")) or Path(name).is_absolute():
        return False
    if find_model(name) is not None:
        return True
    parts = name.split("/")
    if len(parts) >= 2 and Path(parts[0]).is_dir():
        return False
    return bool(_REPO_RE.match(name)) and (len(parts) > 2 or not name.endswith(".gguf"))


def cache_dir() -> Path:
    """Where converted models are kept: $BITNET_CACHE, $XDG_CACHE_HOME/bitnet or
    ~/.cache/bitnet."""
    if os.environ.get("BITNET_CACHE"):
        return Path(os.environ["BITNET_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bitnet"


def hf_cache_dir() -> Path:
    """huggingface_hub's download cache (``huggingface_hub.constants.HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


# -- what the user asked for ----------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    name: str  # as the user wrote it
    repo: str
    file: str | None  # a .gguf file in the repo, when known without listing the repo
    entry: RegistryEntry | None


def _target(name: str) -> _Target:
    entry = find_model(name)
    parts = (entry.repo if entry else name).split("/")
    repo = "/".join(parts[:2])
    file = "/".join(parts[2:]) or None
    entry = entry or find_model(repo)
    if not _REPO_RE.match(repo + (f"/{file}" if file else "")):
        raise HubError(f"{name!r} is neither a file nor a hub model name ('owner/repo')")
    if file is None and entry is not None and entry.format == "gguf":
        file = entry.files[0]
    return _Target(name, repo, file, entry)


def _offline_reason(offline: bool | None) -> str | None:
    """Why downloads are off, or None when they are on."""
    from huggingface_hub import constants

    if offline is not None:
        return "downloads are off (offline=True)" if offline else None
    if constants.HF_HUB_OFFLINE:
        var = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
        return f"downloads are off ({var}={os.environ.get(var, '1')} is set)"
    return None


def _where(t: _Target, rev: str) -> str:
    return (
        t.repo
        + (f"/{t.file}" if t.file and t.entry is None else "")
        + (f" (revision {rev})" if rev != "main" else "")
    )


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """huggingface_hub's own progress switch, restored afterwards (it is process-wide)."""
    from huggingface_hub.utils.tqdm import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    if not enabled and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()


# -- the caches -------------------------------------------------------------------------------


def _cached_file(repo: str, file: str, rev: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, file, revision=rev)
    return Path(found) if isinstance(found, str) else None


def _cached_snapshot(repo: str, rev: str, patterns: list[str]) -> tuple[Path | None, str]:
    """(the snapshot folder of repo at rev in huggingface_hub's cache, or None; why not), found
    without the network. A snapshot whose cached file listing shows files of `patterns`
    missing (an interrupted download) counts as absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo, revision=rev, allow_patterns=patterns, local_files_only=True
        )
    except LocalEntryNotFoundError as e:
        snapshot = getattr(e, "snapshot_path", None)
        return None, (f"the cached snapshot {snapshot} is incomplete" if snapshot else "")
    except (OSError, ValueError) as e:  # an unreadable cache, an invalid repo id
        return None, f"the cache cannot be read ({_root_cause(e)})"
    return Path(folder), ""


def _converted_root(repo: str) -> Path:
    return cache_dir() / "models" / repo.replace("/", "--")


def _safe_ref(revision: str) -> str:
    return re.sub(r"[^\w.-]", "_", revision)


def _previous_conversion(repo: str, rev: str, weight_type: str) -> Path | None:
    """The file an earlier conversion of repo at rev left in bitnet's cache, if any."""
    ref = _converted_root(repo) / "refs" / _safe_ref(rev)
    commit = rev
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    done = _converted_root(repo) / _safe_ref(commit) / f"{weight_type}.gguf"
    return done if done.is_file() else None


def _snapshot_lacks(snap: Path) -> list[str]:
    missing = [] if (snap / "config.json").is_file() else ["config.json"]
    if not any(snap.glob("*.safetensors")):
        missing.append("model.safetensors (or its shards)")
    return missing


def _ggufs(snap: Path) -> list[str]:
    return sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*.gguf") if p.is_file())


def _pick_gguf(repo: str, files: list[str]) -> str:
    ggufs = sorted(f for f in files if f.endswith(".gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    shown = ", ".join(ggufs[:8]) + (" ..." if len(ggufs) > 8 else "")
    raise HubError(f"{repo} holds several GGUF files ({shown}); name one as '{repo}/<file>.gguf'")


# -- the network --------------------------------------------------------------------------------


def _check_reachable(what: str) -> None:
    """Fails at once, naming the cause, when the hub cannot be reached at all.

    huggingface_hub retries a failed connection five times with backoff (about 25 s) before
    giving up; one direct attempt first tells an unreachable hub apart in a fraction of that.
    Skipped behind a proxy (the direct attempt says nothing about the proxied route).
    """
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in _PROXY_VARS):
        return
    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=min(10.0, constants.HF_HUB_ETAG_TIMEOUT))
    except socket.gaierror as e:
        reason = f"cannot resolve {host}: {e.strerror or e}"
    except TimeoutError:
        reason = f"no answer from {host} within {min(10, constants.HF_HUB_ETAG_TIMEOUT)} s"
    except OSError as e:
        reason = f"cannot connect to {host}: {e.strerror or e}"
    else:
        return
    raise HubError(
        f"{what} is not in the cache ({hf_cache_dir()}) and the hub cannot be reached "
        f"({reason}); connect to the network once to download it"
    )


def _root_cause(e: BaseException) -> str:
    cause: BaseException = e
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _hub_error(t: _Target, rev: str, e: Exception) -> HubError:
    from huggingface_hub import errors

    where = _where(t, rev)
    if isinstance(e, errors.GatedRepoError):
        return HubError(
            f"{where} is gated: accept its license on the hub, then log in (`hf auth login`)"
        )
    if isinstance(e, errors.RepositoryNotFoundError):
        local = f"{t.name} is not a file here, and " if "/" in t.name else ""
        return HubError(f"{local}{where}: no such repository on the hub (or it is private)")
    if isinstance(e, errors.RevisionNotFoundError):
        return HubError(f"{where}: no such revision on the hub")
    if isinstance(e, errors.RemoteEntryNotFoundError):
        return HubError(f"{where}: no such file in the repository")
    if isinstance(e, errors.HfHubHTTPError):
        status = e.response.status_code if e.response is not None else "?"
        return HubError(f"{where}: the hub answered HTTP {status} ({_root_cause(e)})")
    return HubError(f"{where}: download failed ({_root_cause(e)})")


def _download_file(t: _Target, file: str, rev: str, *, progress: bool) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        with _progress_bars(progress):
            return Path(hf_hub_download(t.repo, file, revision=rev))
    except Exception as e:  # huggingface_hub and its HTTP client raise many types
        raise _hub_error(t, rev, e) from e


def _download_snapshot(t: _Target, rev: str, patterns: list[str], *, progress: bool) -> Path:
    from huggingface_hub import snapshot_download

    try:
        with _progress_bars(progress):
            return Path(snapshot_download(t.repo, revision=rev, allow_patterns=patterns))
    except Exception as e:
        raise _hub_error(t, rev, e) from e


def _list_files(t: _Target, rev: str) -> list[str]:
    from huggingface_hub import HfApi

    try:
        return list(HfApi().list_repo_files(t.repo, revision=rev))
    except Exception as e:
        raise _hub_error(t, rev, e) from e


# -- resolving --------------------------------------------------------------------------------


def _patterns(entry: RegistryEntry | None) -> list[str]:
    return list(entry.files if entry else _default_files())


def _tokenizer_dir(entry: RegistryEntry | None, *, online: bool, progress: bool) -> Path | None:
    if entry is None or not entry.tokenizer_repo:
        return None
    patterns = list(entry.tokenizer_files)
    snap, _ = _cached_snapshot(entry.tokenizer_repo, "main", patterns)
    if snap is not None and all((snap / f).is_file() for f in patterns if "*" not in f):
        return snap
    tok = _Target(entry.tokenizer_repo, entry.tokenizer_repo, None, None)
    if not online:
        raise HubError(
            f"{entry.repo} takes its tokenizer from {entry.tokenizer_repo}, which is not in the "
            f"cache ({hf_cache_dir()})"
        )
    _check_reachable(entry.tokenizer_repo)
    return _download_snapshot(tok, "main", patterns, progress=progress)


def _convert_snapshot(
    t: _Target, rev: str, snap: Path, *, weight_type: str, online: bool, progress: bool
) -> Path:
    """Converts a cached checkpoint snapshot once; records which commit rev resolved to."""
    from .convert.hf import convert_checkpoint

    root = _converted_root(t.repo)
    out = root / snap.name / f"{weight_type}.gguf"
    if not out.is_file():
        missing = _snapshot_lacks(snap)
        if missing:
            raise HubError(f"{t.repo}: the snapshot {snap} lacks {', '.join(missing)}")
        tok_dir = _tokenizer_dir(t.entry, online=online, progress=progress)
        out.parent.mkdir(parents=True, exist_ok=True)
        convert_checkpoint(
            snap,
            out,
            weight_type=weight_type,
            embedding_type="f16",
            tokenizer=tok_dir,
            overwrite=True,  # a concurrent conversion of the same commit wrote the same file
            progress=progress,
            label=t.repo,
            model_name=t.repo,
        )
    ref = root / "refs" / _safe_ref(rev)
    ref.parent.mkdir(parents=True, exist_ok=True)
    part = ref.with_name(f".{ref.name}.{os.getpid()}")
    part.write_text(snap.name, encoding="utf-8")
    part.replace(ref)
    return out


def _from_cache(
    t: _Target, rev: str, *, weight_type: str, online: bool, progress: bool
) -> tuple[Path | None, str]:
    """(the local GGUF file, or None; what the cache lacks, for the error message)."""
    if t.file is not None:
        return _cached_file(t.repo, t.file, rev), ""
    done = _previous_conversion(t.repo, rev, weight_type)
    if done is not None:
        return done, ""
    snap, why = _cached_snapshot(t.repo, rev, _patterns(t.entry))
    if snap is not None and not _snapshot_lacks(snap):
        converted = _convert_snapshot(
            t, rev, snap, weight_type=weight_type, online=online, progress=progress
        )
        return converted, ""
    if t.entry is None:  # a repository of GGUF files?
        gguf_snap, _ = _cached_snapshot(t.repo, rev, ["*.gguf"])
        ggufs = _ggufs(gguf_snap) if gguf_snap is not None else []
        if gguf_snap is not None and ggufs:
            return gguf_snap / _pick_gguf(t.repo, ggufs), ""
    if snap is not None:
        why = f"the cached snapshot {snap} lacks {', '.join(_snapshot_lacks(snap))}"
    return None, why


def _fetch(t: _Target, rev: str, *, weight_type: str, progress: bool) -> Path:
    if t.file is not None:
        return _download_file(t, t.file, rev, progress=progress)
    if t.entry is None:
        files = _list_files(t, rev)
        if any(f.endswith(".gguf") for f in files) and "config.json" not in files:
            return _download_file(t, _pick_gguf(t.repo, files), rev, progress=progress)
    snap = _download_snapshot(t, rev, _patterns(t.entry), progress=progress)
    return _convert_snapshot(t, rev, snap, weight_type=weight_type, online=True, progress=progress)


def resolve(
    name: str,
    *,
    revision: str | None = None,
    weight_type: str = "tq2_0",
    offline: bool | None = None,
    progress: bool = True,
) -> Path:
    """The local GGUF file for a hub model: from the caches, else downloaded (and converted).

    What is cached is used without asking the network (:func:`pull` updates it).

    Args:
        name: "owner/repo", "owner/repo/file.gguf", or a registry name ("bitnet-2b4t").
        revision: Branch, tag or commit (default "main").
        weight_type: Storage of ternary weights when converting (see :func:`bitnet.convert`).
        offline: True: use only the caches; False: download what is missing; None (default):
            download unless HF_HUB_OFFLINE=1 is set.
        progress: Show progress bars for downloads and the conversion.

    Returns:
        The path of a GGUF file.

    Raises:
        HubError: The model is not cached and cannot be downloaded: the message says why
            (downloads off, hub unreachable, no such repository, revision or file, gated).
        FormatError, UnsupportedError: The checkpoint cannot be converted.

    Example:
        >>> bitnet.hub.resolve("microsoft/bitnet-b1.58-2B-4T-gguf")  # doctest: +SKIP
        PosixPath('/home/me/.cache/huggingface/hub/models--microsoft--.../ggml-model-i2_s.gguf')
    """
    t = _target(name)
    rev = revision or "main"
    off = _offline_reason(offline)
    found, lacks = _from_cache(
        t, rev, weight_type=weight_type, online=off is None, progress=progress
    )
    if found is not None:
        return found
    if off is not None:
        what = f": {lacks}" if lacks else f" is not in the cache ({hf_cache_dir()})"
        raise HubError(f"{_where(t, rev)}{what}, and {off}; connect once to download it")
    _check_reachable(_where(t, rev))
    return _fetch(t, rev, weight_type=weight_type, progress=progress)


def pull(
    name: str,
    *,
    revision: str | None = None,
    weight_type: str = "tq2_0",
    progress: bool = True,
) -> Path:
    """Downloads the latest files of a hub model (and converts them), like ``ollama pull``.

    Unlike :func:`resolve`, this asks the hub which commit ``revision`` points at now, so a
    model updated upstream is fetched again; unchanged files are not downloaded twice.

    Returns:
        The path of the GGUF file.

    Raises:
        HubError: Downloads are off, the hub cannot be reached, or it refuses (named).
    """
    t = _target(name)
    rev = revision or "main"
    off = _offline_reason(None)
    if off is not None:
        raise HubError(f"pulling {_where(t, rev)} needs the network, but {off}")
    _check_reachable(_where(t, rev))
    return _fetch(t, rev, weight_type=weight_type, progress=progress)


def checkpoint_dir(
    name: str, *, revision: str | None = None, progress: bool = True
) -> tuple[Path, Path | None]:
    """(checkpoint directory, tokenizer directory or None) of a hub safetensors model, from
    the cache or downloaded: what ``bitnet convert owner/repo out.gguf`` converts.

    Raises:
        HubError: Not a checkpoint (a GGUF repository), or not cached and not downloadable.
    """
    t = _target(name)
    rev = revision or "main"
    if t.file is not None:
        raise HubError(
            f"{t.repo} holds GGUF files, not a checkpoint to convert; `bitnet pull {t.name}` "
            "downloads it ready to run"
        )
    off = _offline_reason(None)
    patterns = _patterns(t.entry)
    not_a_checkpoint = HubError(
        f"{t.repo} holds GGUF files, not a checkpoint to convert; `bitnet pull {t.name}` "
        "downloads it ready to run"
    )
    snap, _ = _cached_snapshot(t.repo, rev, patterns)
    if snap is None or _snapshot_lacks(snap):
        gguf_snap, _ = _cached_snapshot(t.repo, rev, ["*.gguf"])
        if t.entry is None and gguf_snap is not None and _ggufs(gguf_snap):
            raise not_a_checkpoint
        if off is not None:
            why = f"the cached snapshot {snap} is incomplete" if snap else "it is not cached"
            raise HubError(f"{_where(t, rev)}: {why} ({hf_cache_dir()}), and {off}")
        _check_reachable(_where(t, rev))
        if t.entry is None:
            files = _list_files(t, rev)
            if any(f.endswith(".gguf") for f in files) and "config.json" not in files:
                raise not_a_checkpoint
        snap = _download_snapshot(t, rev, patterns, progress=progress)
    tok = _tokenizer_dir(t.entry, online=off is None, progress=progress)
    return snap, tok


# -- listing and removing (bitnet models, bitnet rm) ------------------------------------------


@dataclass(frozen=True)
class CachedModel:
    """A model held in the caches, ready to run without the network.

    Attributes:
        repo: The hub repository "owner/name".
        name: Its short registry name, if it has one.
        files: The GGUF files that run it: downloaded ones and conversions (per weight type).
        revisions: The branches or tags whose commit is cached ("main").
        size_bytes: Disk space of its downloads and conversions.
        modified: Newest modification time (seconds since the epoch).
    """

    repo: str
    name: str | None
    files: tuple[Path, ...]
    revisions: tuple[str, ...]
    size_bytes: int
    modified: float


def _tree_size(path: Path) -> tuple[int, float]:
    size, newest = 0, 0.0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            st = p.stat()
            if p.is_file():
                size += st.st_size
                newest = max(newest, st.st_mtime)
    return size, newest


def cached_models() -> list[CachedModel]:
    """The models in the caches that bitnet can run: downloaded GGUF files, downloaded
    checkpoints, and conversions. Reads the disk only."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    found: dict[str, dict[str, Any]] = {}

    def slot(repo: str) -> dict[str, Any]:
        return found.setdefault(
            repo, {"files": [], "revisions": set(), "size": 0, "modified": 0.0, "usable": False}
        )

    try:
        info = scan_cache_dir(hf_cache_dir())
        repos = [r for r in info.repos if r.repo_type == "model"]
    except (CacheNotFound, OSError):
        repos = []
    for r in repos:
        entry = find_model(r.repo_id)
        ggufs = [
            f.file_path for rev in r.revisions for f in rev.files if f.file_name.endswith(".gguf")
        ]
        checkpoint = any(
            {"config.json"} <= {f.file_name for f in rev.files}
            and any(f.file_name.endswith(".safetensors") for f in rev.files)
            for rev in r.revisions
        )
        if not (ggufs or checkpoint or entry is not None):
            continue  # some other library's model: not ours to list
        s = slot(r.repo_id)
        s["files"] += ggufs
        s["revisions"] |= {ref for rev in r.revisions for ref in rev.refs}
        s["size"] += r.size_on_disk
        s["modified"] = max(s["modified"], r.last_modified)
        s["usable"] = s["usable"] or bool(ggufs) or checkpoint
    models_dir = cache_dir() / "models"
    if models_dir.is_dir():
        for root in sorted(models_dir.iterdir()):
            if not root.is_dir() or "--" not in root.name:
                continue
            conversions = sorted(root.glob("*/*.gguf"))
            if not conversions:
                continue
            s = slot(root.name.replace("--", "/", 1))
            s["files"] += conversions
            size, newest = _tree_size(root)
            s["size"] += size
            s["modified"] = max(s["modified"], newest)
            s["usable"] = True
    out = []
    for repo, s in sorted(found.items(), key=lambda kv: kv[0].lower()):
        if not s["usable"]:
            continue
        entry = find_model(repo)
        out.append(
            CachedModel(
                repo=repo,
                name=entry.name if entry else None,
                files=tuple(Path(p) for p in s["files"]),
                revisions=tuple(sorted(s["revisions"])),
                size_bytes=int(s["size"]),
                modified=float(s["modified"]),
            )
        )
    return out


def remove(name: str) -> int:
    """Deletes a model's downloads (from huggingface_hub's cache) and conversions, like
    ``ollama rm``; returns the bytes freed.

    Raises:
        HubError: Nothing of the model is cached.
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    repo = _target(name).repo
    freed = 0
    found = False
    with contextlib.suppress(CacheNotFound):
        # The whole repository folder goes, as `hf cache delete` of every revision would.
        # (delete_revisions() takes bare commit hashes, which a mirror or fork shares with its
        # source: it could pick the other repository's folder.)
        for r in scan_cache_dir(hf_cache_dir()).repos:
            if r.repo_type == "model" and r.repo_id.lower() == repo.lower():
                found = True
                freed += r.size_on_disk
                shutil.rmtree(r.repo_path)
    root = _converted_root(repo)
    if root.is_dir():
        found = True
        freed += _tree_size(root)[0]
        shutil.rmtree(root)
    if not found:
        raise HubError(f"{name} is not in the cache ({hf_cache_dir()}, {cache_dir()})")
    return freed
