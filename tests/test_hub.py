"""Hub models without the network: a download cache prepared in huggingface_hub's own layout
(models--owner--name/{blobs,refs,snapshots}) and HF_HUB_OFFLINE=1, so the real hub client
resolves refs and snapshots exactly as it does after a download."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bitnet
from bitnet import HubError, hub

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def add_repo(hub_dir: Path, repo: str, files: dict[str, Path], commit: str, ref: str = "main"):
    """Puts files into the cache as huggingface_hub does: content-addressed blobs, a snapshot
    folder of symlinks per commit, and refs/<revision> holding the commit."""
    root = hub_dir / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, src in files.items():
        data = src.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, hf_models, converted):
    """HF_HOME with three repositories: a safetensors checkpoint, a GGUF repo, a broken one."""
    hf_home = tmp_path / "hf"
    hub_dir = hf_home / "hub"
    ckpt = hf_models["2b4t-packed"].path
    add_repo(hub_dir, "testorg/tiny-bitnet", {f.name: f for f in ckpt.iterdir()}, COMMIT_A)
    gguf_file = converted("2b4t-packed")
    add_repo(hub_dir, "testorg/tiny-gguf", {"tiny.gguf": gguf_file}, COMMIT_A)
    add_repo(
        hub_dir,
        "testorg/two-ggufs",
        {"a.gguf": gguf_file, "sub/b.gguf": gguf_file},
        COMMIT_A,
    )
    add_repo(hub_dir, "testorg/broken", {"config.json": ckpt / "config.json"}, COMMIT_A)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BITNET_CACHE", str(tmp_path / "bitnet"))
    return tmp_path


def test_safetensors_repo_is_converted_once(offline_cache, converted):
    model = bitnet.load("testorg/tiny-bitnet", progress=False)
    out = offline_cache / "bitnet" / "models" / "testorg--tiny-bitnet" / COMMIT_A / "tq2_0.gguf"
    assert Path(model.path) == out
    ref = offline_cache / "bitnet" / "models" / "testorg--tiny-bitnet" / "refs" / "main"
    assert ref.read_text() == COMMIT_A
    direct = bitnet.load(converted("2b4t-packed", "tq2_0", "f16"))  # the converter's defaults
    options = {"max_tokens": 10, "temperature": 0}
    assert model.generate("In the beginning", **options) == direct.generate(
        "In the beginning", **options
    )
    stamp = out.stat().st_mtime_ns
    again = bitnet.load("testorg/tiny-bitnet", progress=False)
    assert Path(again.path) == out and out.stat().st_mtime_ns == stamp  # reused, not rebuilt

    # With the download cache gone, the converted file still serves offline.
    shutil.rmtree(offline_cache / "hf" / "hub" / "models--testorg--tiny-bitnet")
    assert Path(bitnet.load("testorg/tiny-bitnet", progress=False).path) == out


def test_gguf_repo_loads_directly(offline_cache):
    model = bitnet.load("testorg/tiny-gguf")
    assert Path(model.path).name == "tiny.gguf"
    assert COMMIT_A in model.path and not (offline_cache / "bitnet" / "models").exists()
    with pytest.raises(HubError, match="several GGUF files"):
        bitnet.load("testorg/two-ggufs")
    assert Path(bitnet.load("testorg/two-ggufs/sub/b.gguf").path).name == "b.gguf"


def test_revision(offline_cache, hf_models):
    ckpt = hf_models["2b4t-packed"].path
    add_repo(
        offline_cache / "hf" / "hub",
        "testorg/tiny-bitnet",
        {f.name: f for f in ckpt.iterdir()},
        COMMIT_B,
        ref="v2",
    )
    model = bitnet.load("testorg/tiny-bitnet", revision="v2", progress=False)
    assert COMMIT_B in model.path
    with pytest.raises(HubError, match="revision nope"):
        bitnet.load("testorg/tiny-bitnet", revision="nope", progress=False)
    with pytest.raises(ValueError, match="local path"):
        bitnet.load(model.path, revision="v2")


def test_missing_pieces_are_named(offline_cache):
    with pytest.raises(HubError, match=r"lacks model\.safetensors"):
        bitnet.load("testorg/broken", progress=False)
    with pytest.raises(HubError, match=r"not in the cache.*HF_HUB_OFFLINE=1"):
        bitnet.load("testorg/not-downloaded", progress=False)
    with pytest.raises(HubError, match="not in the cache"):
        bitnet.load("bitnet-2b4t-gguf")  # a registry name resolves to its repository


def test_hub_names_and_local_paths(tmp_path):
    assert hub.is_hub_name("owner/repo")
    assert hub.is_hub_name("owner/repo/weights/model.gguf")
    assert hub.is_hub_name("bitnet-2b4t")
    for local in ("./x.gguf", "/abs/model.gguf", "dir/model.gguf", "~/m.gguf", "model.gguf"):
        assert not hub.is_hub_name(local), local
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "repo").write_bytes(b"")
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        assert not hub.is_hub_name("owner/repo")  # an existing path wins
    finally:
        os.chdir(cwd)


def test_cache_locations(monkeypatch, tmp_path):
    for var in (
        "BITNET_CACHE",
        "XDG_CACHE_HOME",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
    ):
        monkeypatch.delenv(var, raising=False)
    assert hub.cache_dir() == Path.home() / ".cache" / "bitnet"
    assert hub.hf_cache_dir() == Path.home() / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "bitnet"
    assert hub.hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub.hf_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert hub.hf_cache_dir() == tmp_path / "hubcache"
    monkeypatch.setenv("BITNET_CACHE", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine"


def test_registry_lists_the_known_checkpoints():
    entries = {m.name: m for m in hub.registry()}
    repos = {m.repo for m in entries.values()}
    for repo in (
        "microsoft/bitnet-b1.58-2B-4T",
        "microsoft/bitnet-b1.58-2B-4T-gguf",
        "1bitLLM/bitnet_b1_58-large",
        "1bitLLM/bitnet_b1_58-3B",
        "HF1BitLLM/Llama3-8B-1.58-100B-tokens",
        "tiiuae/Falcon3-1B-Instruct-1.58bit",
    ):
        assert repo in repos
    assert all(m.format in ("gguf", "safetensors") for m in entries.values())
    assert entries["bitnet-2b4t-gguf"].files == ("ggml-model-i2_s.gguf",)
    assert "*.safetensors" in entries["bitnet-2b4t"].files
    assert not any(f.endswith(".bin") for f in entries["bitnet-2b4t"].files)
    llama3 = entries["llama3-8b-1.58"]
    assert llama3.tokenizer_repo == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert "tokenizer.json" in llama3.tokenizer_files
    assert hub.find_model("MICROSOFT/BITNET-B1.58-2B-4T") is entries["bitnet-2b4t"]


def test_registry_ships_in_the_package():
    import bitnet as pkg

    installed = Path(pkg.__file__).parent / "registry.json"
    source = Path(__file__).parent.parent / "models" / "registry.json"
    assert installed.is_file() or source.is_file()
    if installed.is_file() and source.is_file():
        assert installed.read_bytes() == source.read_bytes()


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bitnet.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_cli_with_hub_names(offline_cache):
    env = dict(os.environ)
    r = run_cli("generate", "-m", "testorg/tiny-gguf", "-n", "4", "-t", "0", "Hello", env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("generate", "-m", "testorg/not-downloaded", "Hello", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("bitnet: error: testorg/not-downloaded is not in the cache")
    assert len(r.stderr.strip().splitlines()) == 1
