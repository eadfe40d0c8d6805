"""Models from the Hugging Face hub: download only what is needed, convert once, reuse.

``bitnet.load("owner/repo")`` goes through :func:`resolve`:

* GGUF repositories (e.g. ``microsoft/bitnet-b1.58-2B-4T-gguf``) download the one ``.gguf``
  file and load it as it is. ``owner/repo/file.gguf`` picks a file in a repository with several.
* Safetensors repositories download config, weights and tokenizer files only (never the
  PyTorch ``.bin`` duplicates), convert them once, and keep the result.

Where things go:

* downloads: huggingface_hub's own cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``), shared with every
  other tool that uses it;
* converted files: ``$BITNET_CACHE``, else ``$XDG_CACHE_HOME/bitnet``, else
  ``~/.cache/bitnet``, as ``models/<owner>--<repo>/<commit>/<weight type>.gguf``, plus
  ``models/<owner>--<repo>/refs/<revision>`` holding the commit a revision last resolved to.

Offline (``HF_HUB_OFFLINE=1``, or ``offline=True``) only the caches are used; a missing piece is
named in the error. Known checkpoints are listed in the registry shipped with the package
(:func:`registry`), with short names such as ``bitnet-2b4t``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import BitnetError

__all__ = [
    "HubError",
    "RegistryEntry",
    "cache_dir",
    "find_model",
    "hf_cache_dir",
    "is_hub_name",
    "registry",
    "resolve",
]

_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/.+\.gguf)?$")
_TRUE = {"1", "on", "yes", "true"}


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
        description: One line for ``bitnet models``.
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
def registry() -> tuple[RegistryEntry, ...]:
    """The known hub checkpoints (models/registry.json).

    Example:
        >>> [m.name for m in registry()][:2]
        ['bitnet-2b4t', 'bitnet-2b4t-gguf']
    """
    data = json.loads(_registry_path().read_text(encoding="utf-8"))
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
    data = json.loads(_registry_path().read_text(encoding="utf-8"))
    return tuple(data["default_files"])


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
    absolute or explicitly relative paths ("./x", "~/x"), and "dir/file.gguf" are local.
    """
    if Path(name).exists() or name.startswith(("/", ".", "~", "\\")) or Path(name).is_absolute():
        return False
    if find_model(name) is not None:
        return True
    parts = name.split("/")
    return bool(_REPO_RE.match(name)) and (len(parts) > 2 or not name.endswith(".gguf"))


def cache_dir() -> Path:
    """Where converted models are kept: $BITNET_CACHE, $XDG_CACHE_HOME/bitnet or
    ~/.cache/bitnet."""
    if os.environ.get("BITNET_CACHE"):
        return Path(os.environ["BITNET_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bitnet"


def hf_cache_dir() -> Path:
    """huggingface_hub's download cache, read from the environment at call time."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _repo_folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def _safe_ref(revision: str) -> str:
    return re.sub(r"[^\w.-]", "_", revision)


def _cached_snapshot(repo: str, revision: str) -> Path | None:
    """The snapshot folder huggingface_hub's cache holds for repo at revision, if any."""
    root = hf_cache_dir() / _repo_folder(repo)
    commit = revision
    ref = root / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    snap = root / "snapshots" / commit
    return snap if snap.is_dir() else None


def _hub_error(repo: str, revision: str, offline: bool, e: Exception) -> HubError:
    from huggingface_hub import errors

    where = f"{repo}" + (f" (revision {revision})" if revision != "main" else "")
    if isinstance(e, errors.GatedRepoError):
        return HubError(
            f"{where} is gated: accept its license on the hub, then log in (`hf auth login`)"
        )
    if isinstance(e, errors.RepositoryNotFoundError):
        return HubError(f"{where}: no such repository on the hub (or it is private)")
    if isinstance(e, errors.RevisionNotFoundError):
        return HubError(f"{where}: no such revision")
    if isinstance(e, errors.LocalEntryNotFoundError) or offline:
        return HubError(
            f"{where} is not in the cache ({hf_cache_dir()}) and downloads are off "
            "(HF_HUB_OFFLINE=1); connect once to download it"
        )
    return HubError(f"{where}: download failed ({type(e).__name__}: {e})")


def _download(
    repo: str, revision: str, patterns: list[str], *, offline: bool, progress: bool
) -> Path:
    from huggingface_hub import snapshot_download

    kwargs: dict[str, Any] = {}
    if not progress:
        from tqdm.auto import tqdm

        class _Silent(tqdm):  # type: ignore[type-arg]
            def __init__(self, *args: Any, **kw: Any) -> None:
                kw["disable"] = True
                super().__init__(*args, **kw)

        kwargs["tqdm_class"] = _Silent
    try:
        path = snapshot_download(
            repo,
            revision=revision,
            allow_patterns=patterns,
            cache_dir=hf_cache_dir(),
            local_files_only=offline,
            **kwargs,
        )
    except Exception as e:  # huggingface_hub and its HTTP client raise many types
        raise _hub_error(repo, revision, offline, e) from e
    return Path(str(path))


def _list_files(repo: str, revision: str, offline: bool) -> list[str]:
    if offline:
        snap = _cached_snapshot(repo, revision)
        if snap is None:
            raise _hub_error(repo, revision, True, FileNotFoundError(repo))
        return [p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()]
    from huggingface_hub import HfApi

    try:
        return list(HfApi().list_repo_files(repo, revision=revision))
    except Exception as e:
        raise _hub_error(repo, revision, offline, e) from e


def _pick_gguf(repo: str, files: list[str]) -> str:
    ggufs = sorted(f for f in files if f.endswith(".gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    shown = ", ".join(ggufs[:8]) + (" ..." if len(ggufs) > 8 else "")
    raise HubError(f"{repo} holds several GGUF files ({shown}); name one as '{repo}/<file>.gguf'")


def resolve(
    name: str,
    *,
    revision: str | None = None,
    weight_type: str = "tq2_0",
    offline: bool | None = None,
    progress: bool = True,
) -> Path:
    """The local GGUF file for a hub model, downloading and converting it if needed.

    Args:
        name: "owner/repo", "owner/repo/file.gguf", or a registry name ("bitnet-2b4t").
        revision: Branch, tag or commit (default "main").
        weight_type: Storage of ternary weights when converting (see :func:`bitnet.convert`).
        offline: Use only the caches (default: the HF_HUB_OFFLINE environment variable).
        progress: Show progress bars for downloads and the conversion.

    Returns:
        The path of a GGUF file.

    Raises:
        HubError: The model could not be downloaded or is missing from the cache offline.
        FormatError, UnsupportedError: The checkpoint cannot be converted.

    Example:
        >>> bitnet.hub.resolve("microsoft/bitnet-b1.58-2B-4T-gguf")  # doctest: +SKIP
        PosixPath('/home/me/.cache/huggingface/hub/models--microsoft--.../ggml-model-i2_s.gguf')
    """
    rev = revision or "main"
    off = _offline() if offline is None else offline
    entry = find_model(name)
    parts = (entry.repo if entry else name).split("/")
    repo = "/".join(parts[:2])
    file = "/".join(parts[2:])
    entry = entry or find_model(repo)
    if not _REPO_RE.match(repo + (f"/{file}" if file else "")):
        raise HubError(f"{name!r} is neither a file nor a hub model name ('owner/repo')")

    if file or (entry is not None and entry.format == "gguf"):
        gguf = file or (entry.files[0] if entry else "")
        return _download(repo, rev, [gguf], offline=off, progress=progress) / gguf
    if entry is None:
        try:
            files = _list_files(repo, rev, off)
        except HubError:
            done = _previous_conversion(repo, rev, weight_type) if off else None
            if done is None:
                raise
            return done
        if any(f.endswith(".gguf") for f in files):
            gguf = _pick_gguf(repo, files)
            return _download(repo, rev, [gguf], offline=off, progress=progress) / gguf
    return _convert_cached(
        repo, rev, entry, weight_type=weight_type, offline=off, progress=progress
    )


def _converted_root(repo: str) -> Path:
    return cache_dir() / "models" / repo.replace("/", "--")


def _previous_conversion(repo: str, rev: str, weight_type: str) -> Path | None:
    """The file an earlier conversion of repo at rev left in bitnet's cache, if any."""
    ref = _converted_root(repo) / "refs" / _safe_ref(rev)
    if not ref.is_file():
        return None
    done = _converted_root(repo) / ref.read_text(encoding="utf-8").strip() / f"{weight_type}.gguf"
    return done if done.is_file() else None


def _convert_cached(
    repo: str,
    rev: str,
    entry: RegistryEntry | None,
    *,
    weight_type: str,
    offline: bool,
    progress: bool,
) -> Path:
    from .convert import convert

    root = _converted_root(repo)
    ref = root / "refs" / _safe_ref(rev)
    patterns = list(entry.files if entry else _default_files())
    try:
        snap = _download(repo, rev, patterns, offline=offline, progress=progress)
    except HubError:
        # Offline with the download cache cleaned: a conversion made earlier still serves.
        done = _previous_conversion(repo, rev, weight_type) if offline else None
        if done is None:
            raise
        return done
    out = root / snap.name / f"{weight_type}.gguf"
    if not out.is_file():
        missing = [f for f in ("config.json",) if not (snap / f).is_file()]
        if not any(snap.glob("*.safetensors")):
            missing.append("model.safetensors (or its shards)")
        if missing:
            raise HubError(
                f"{repo}: the {'cached ' if offline else ''}snapshot {snap} lacks "
                f"{', '.join(missing)}"
                + ("; connect once (HF_HUB_OFFLINE=1 is set) to download it" if offline else "")
            )
        tok_dir = None
        if entry is not None and entry.tokenizer_repo:
            tok_dir = _download(
                entry.tokenizer_repo,
                "main",
                list(entry.tokenizer_files),
                offline=offline,
                progress=progress,
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{os.getpid()}.{out.name}")
        part.unlink(missing_ok=True)
        convert(snap, part, weight_type=weight_type, tokenizer=tok_dir, progress=progress)
        part.replace(out)  # atomic: a concurrent process sees the old state or the new file
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(snap.name, encoding="utf-8")
    return out
