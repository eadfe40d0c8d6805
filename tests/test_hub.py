"""Hub models without the network: a download cache prepared in huggingface_hub's own layout
(models--owner--name/{blobs,refs,snapshots}), read by the real hub client.

Nothing here may reach the network: in-process tests replace socket connections with a failure
(``no_network``), and commands run as subprocesses get ``HF_ENDPOINT`` pointed at a closed local
port, so an accidental download fails at once instead of leaving the machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import bitnet
from bitnet import HubError, hub

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
CLOSED_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens, connections fail


def same_model(a: Path, b: Path, name: str) -> None:
    """a and b hold the same tensors and metadata; a's general.name is `name`."""
    import gguf
    import numpy as np

    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    assert ra.fields["general.name"].contents() == name
    keys = set(ra.fields) - {"general.name"}
    assert keys == set(rb.fields) - {"general.name"}
    for key in keys:
        if not key.startswith("GGUF."):
            assert ra.fields[key].contents() == rb.fields[key].contents(), key
    assert [t.name for t in ra.tensors] == [t.name for t in rb.tensors]
    for ta, tb in zip(ra.tensors, rb.tensors, strict=True):
        np.testing.assert_array_equal(np.asarray(ta.data), np.asarray(tb.data), err_msg=ta.name)


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
def no_network(monkeypatch):
    """Any connection attempt from this process fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def use_hub_env(monkeypatch, hf_home: Path, *, offline: bool, endpoint: str | None = None):
    """Points this process and its subprocesses at hf_home. huggingface_hub reads its
    environment once, at import, into huggingface_hub.constants: both are set."""
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if endpoint is not None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)


@pytest.fixture
def fake_cache(tmp_path, monkeypatch, hf_models, converted):
    """HF_HOME with four repositories (a safetensors checkpoint, a GGUF repository, one with
    two GGUF files, a broken checkpoint); downloads on, but no network."""
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
    use_hub_env(monkeypatch, hf_home, offline=False, endpoint=CLOSED_ENDPOINT)
    monkeypatch.setenv("BITNET_CACHE", str(tmp_path / "bitnet"))
    return tmp_path


def test_safetensors_repo_is_converted_once(fake_cache, converted, no_network):
    # Downloads are on (no HF_HUB_OFFLINE): a cached model needs no network and no setting.
    model = bitnet.load("testorg/tiny-bitnet", progress=False)
    out = fake_cache / "bitnet" / "models" / "testorg--tiny-bitnet" / COMMIT_A / "tq2_0.gguf"
    assert Path(model.path) == out
    ref = fake_cache / "bitnet" / "models" / "testorg--tiny-bitnet" / "refs" / "main"
    assert ref.read_text() == COMMIT_A
    # The converter's defaults, named after the repository.
    same_model(out, converted("2b4t-packed", "tq2_0", "f16"), "testorg/tiny-bitnet")
    stamp = out.stat().st_mtime_ns
    again = bitnet.load("testorg/tiny-bitnet", progress=False)
    assert Path(again.path) == out and out.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert not list(out.parent.glob(".*.part"))  # no temporary file left behind

    # With the download cache gone, the converted file still serves.
    shutil.rmtree(fake_cache / "hf" / "hub" / "models--testorg--tiny-bitnet")
    assert Path(bitnet.load("testorg/tiny-bitnet", progress=False).path) == out


def test_gguf_repo_loads_directly(fake_cache, no_network):
    model = bitnet.load("testorg/tiny-gguf")
    assert Path(model.path).name == "tiny.gguf"
    assert COMMIT_A in model.path and not (fake_cache / "bitnet" / "models").exists()
    with pytest.raises(HubError, match="several GGUF files"):
        bitnet.load("testorg/two-ggufs")
    assert Path(bitnet.load("testorg/two-ggufs/sub/b.gguf").path).name == "b.gguf"


def test_revision(fake_cache, hf_models, no_network, monkeypatch):
    ckpt = hf_models["2b4t-packed"].path
    add_repo(
        fake_cache / "hf" / "hub",
        "testorg/tiny-bitnet",
        {f.name: f for f in ckpt.iterdir()},
        COMMIT_B,
        ref="v2",
    )
    model = bitnet.load("testorg/tiny-bitnet", revision="v2", progress=False)
    assert COMMIT_B in model.path
    assert Path(bitnet.load("testorg/tiny-bitnet", revision=COMMIT_B).path) == Path(model.path)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="revision nope"):
        bitnet.load("testorg/tiny-bitnet", revision="nope", progress=False)


def test_missing_pieces_are_named_offline(fake_cache, monkeypatch, no_network):
    use_hub_env(monkeypatch, fake_cache / "hf", offline=True)
    with pytest.raises(HubError, match=r"lacks model\.safetensors") as e:
        bitnet.load("testorg/broken", progress=False)
    assert "HF_HUB_OFFLINE=1 is set" in str(e.value)
    with pytest.raises(HubError, match=r"not in the cache.*HF_HUB_OFFLINE=1 is set"):
        bitnet.load("testorg/not-downloaded", progress=False)
    with pytest.raises(HubError, match="not in the cache"):
        bitnet.load("bitnet-2b4t-gguf")  # a registry name resolves to its repository
    with pytest.raises(HubError, match=r"offline=True"):
        hub.resolve("testorg/not-downloaded", offline=True)


def test_unreachable_hub_fails_at_once_naming_the_cause(fake_cache):
    # Downloads on, HF_ENDPOINT at a closed port: one refused connection, not five retries.
    with pytest.raises(HubError) as e:
        bitnet.load("testorg/not-downloaded", progress=False)
    message = str(e.value)
    assert "not in the cache" in message and "cannot connect to 127.0.0.1" in message
    assert "HF_HUB_OFFLINE" not in message  # not set, so not blamed
    with pytest.raises(HubError, match=r"cannot connect to 127\.0\.0\.1"):
        hub.pull("testorg/tiny-gguf")


def test_pull_needs_downloads_on(fake_cache, monkeypatch):
    use_hub_env(monkeypatch, fake_cache / "hf", offline=True)
    with pytest.raises(HubError, match=r"needs the network.*HF_HUB_OFFLINE=1 is set"):
        hub.pull("testorg/tiny-gguf")


def test_hub_names_and_local_paths(tmp_path, monkeypatch):
    assert hub.is_hub_name("owner/repo")
    assert hub.is_hub_name("owner/repo/weights/model.gguf")
    assert hub.is_hub_name("bitnet-2b4t")
    for local in ("./x.gguf", "/abs/model.gguf", "dir/model.gguf", "~/m.gguf", "model.gguf"):
        assert not hub.is_hub_name(local), local
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "repo").write_bytes(b"")
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not hub.is_hub_name("owner/repo")  # an existing path wins
    assert not hub.is_hub_name("models/missing")  # a folder that exists here: a local path


def test_cache_locations(monkeypatch, tmp_path):
    from huggingface_hub import constants

    for var in ("BITNET_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert hub.cache_dir() == Path.home() / ".cache" / "bitnet"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "bitnet"
    monkeypatch.setenv("BITNET_CACHE", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine"
    assert hub.hf_cache_dir() == Path(constants.HF_HUB_CACHE)  # huggingface_hub's own answer


def test_hf_cache_location_follows_huggingface_hub(tmp_path):
    # huggingface_hub resolves HF_HUB_CACHE / HF_HOME when it is imported: a fresh process.
    code = "from bitnet import hub; print(hub.hf_cache_dir())"
    for env, expected in (
        ({"HF_HOME": str(tmp_path / "home")}, tmp_path / "home" / "hub"),
        ({"HF_HUB_CACHE": str(tmp_path / "c"), "HF_HOME": str(tmp_path / "x")}, tmp_path / "c"),
    ):
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**clean, **env},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert Path(out.stdout.strip()) == expected


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


def test_convert_from_a_hub_name(fake_cache, converted, no_network, capsys):
    out = bitnet.convert("testorg/tiny-bitnet", fake_cache / "out.gguf", progress=True)
    same_model(out, converted("2b4t-packed", "tq2_0", "f16"), "testorg/tiny-bitnet")
    err = capsys.readouterr().err
    assert "converting testorg/tiny-bitnet" in err and ".part" not in err  # the model's name
    with pytest.raises(HubError, match="holds GGUF files, not a checkpoint"):
        bitnet.convert("testorg/tiny-gguf", fake_cache / "x.gguf", progress=False)


def test_hub_conversion_progress_names_the_model(fake_cache, no_network, capsys):
    bitnet.load("testorg/tiny-bitnet", progress=True)
    err = capsys.readouterr().err
    assert "converting testorg/tiny-bitnet" in err and ".part" not in err


def test_cached_models_and_remove(fake_cache, no_network):
    bitnet.load("testorg/tiny-bitnet", progress=False)  # a conversion, too
    listed = {m.repo: m for m in hub.cached_models()}
    assert set(listed) == {"testorg/tiny-bitnet", "testorg/tiny-gguf", "testorg/two-ggufs"}
    tiny = listed["testorg/tiny-bitnet"]
    assert any(f.name == "tq2_0.gguf" for f in tiny.files) and tiny.revisions == ("main",)
    assert tiny.size_bytes > 0 and tiny.modified > 0
    assert [f.name for f in listed["testorg/tiny-gguf"].files] == ["tiny.gguf"]

    freed = hub.remove("testorg/tiny-bitnet")
    assert freed > 0
    assert not (fake_cache / "hf" / "hub" / "models--testorg--tiny-bitnet").exists()
    assert not (fake_cache / "bitnet" / "models" / "testorg--tiny-bitnet").exists()
    assert "testorg/tiny-bitnet" not in {m.repo for m in hub.cached_models()}
    with pytest.raises(HubError, match="not in the cache"):
        hub.remove("testorg/tiny-bitnet")


# -- the command line, as a user runs it (the installed `bitnet`) --------------------------------


def bitnet_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from cli_helpers import bitnet_command

    return subprocess.run(
        [*bitnet_command(), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_cli_hub_paths(fake_cache):
    env = dict(os.environ)
    r = bitnet_cli("info", "-m", "testorg/tiny-gguf", env=env)
    assert r.returncode == 0, r.stderr
    assert "tiny.gguf" in r.stdout and "Retrying" not in r.stderr

    r = bitnet_cli("info", "-m", "testorg/not-downloaded", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "Retrying" not in r.stderr
    assert r.stderr.startswith("bitnet: error: testorg/not-downloaded is not in the cache")
    assert "cannot connect to 127.0.0.1" in r.stderr and "HF_HUB_OFFLINE" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    r = bitnet_cli("info", "-m", "testorg/not-downloaded", env={**env, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1 and "HF_HUB_OFFLINE=1 is set" in r.stderr

    out = fake_cache / "cli.gguf"
    r = bitnet_cli("convert", "testorg/tiny-bitnet", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and "converting testorg/tiny-bitnet" in r.stderr
    assert ".part" not in r.stderr

    r = bitnet_cli("pull", "testorg/tiny-gguf", env=env)
    assert r.returncode == 1 and "cannot connect to 127.0.0.1" in r.stderr

    r = bitnet_cli("models", env=env)
    assert r.returncode == 0, r.stderr
    assert "testorg/tiny-gguf" in r.stdout and "testorg/broken" not in r.stdout
    assert "(bundled" in r.stdout
    r = bitnet_cli("models", "--known", env=env)
    assert "microsoft/bitnet-b1.58-2B-4T-gguf" in r.stdout and "bitnet-2b4t" in r.stdout

    r = bitnet_cli("rm", "testorg/tiny-gguf", env=env)
    assert r.returncode == 0 and r.stdout.startswith("deleted testorg/tiny-gguf")
    r = bitnet_cli("rm", "testorg/tiny-gguf", env=env)
    assert r.returncode == 1 and "not in the cache" in r.stderr
