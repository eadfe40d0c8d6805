"""The training corpus (King James Bible from Debian), its split and its SentencePiece tokenizer.

The text comes from the Debian packages ``bible-kjv-text`` (the public-domain 1769 Authorized
Version, compressed) and ``bible-kjv`` (its reader, ``bible``), fetched with ``apt-get download``
and unpacked with ``dpkg -x`` -- no root and no installation needed.

Preprocessing: chapter headings and verse numbers are dropped, wrapped lines are joined, and the
verses of a chapter are joined by single spaces into one paragraph, so the model writes running
prose. Every 50th chapter (chapters 49, 99, ... in canonical order, about 2% of the text) is held
out for validation.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "VALIDATION_EVERY",
    "fetch_kjv",
    "parse_kjv",
    "split_chapters",
    "train_tokenizer",
]

VALIDATION_EVERY = 50
_HEADING = re.compile(r"^(\S.*) (\d+)$")
_VERSE = re.compile(r"^\s+(\d+) (.*)$")


def fetch_kjv(workdir: Path) -> Path:
    """Downloads and unpacks the Debian KJV packages into workdir; returns the raw text file."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "kjv.txt"
    if out.is_file() and out.stat().st_size > 4_000_000:
        return out
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"fetching the corpus needs {tool} (a Debian or Ubuntu system)")
    subprocess.run(["apt-get", "download", "bible-kjv", "bible-kjv-text"], cwd=workdir, check=True)
    root = workdir / "root"
    for deb in sorted(workdir.glob("bible-kjv*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    text = subprocess.run(
        [str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "Gen1:1-Rev22:21"],
        check=True,
        capture_output=True,
    ).stdout
    out.write_bytes(text)
    return out


def parse_kjv(text: str) -> list[str]:
    """Chapters of the ``bible`` output, each one paragraph of its verses joined by spaces."""
    chapters: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if _HEADING.match(line):
            chapters.append([])
        elif (m := _VERSE.match(line)) is not None:
            chapters[-1].append(m.group(2).strip())
        elif chapters and chapters[-1]:
            chapters[-1][-1] += " " + line.strip()
    return [" ".join(" ".join(v.split()) for v in ch) for ch in chapters if ch]


def split_chapters(chapters: list[str]) -> tuple[list[str], list[str]]:
    """(train, validation): every VALIDATION_EVERY-th chapter goes to validation."""
    val = [c for i, c in enumerate(chapters) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    train = [c for i, c in enumerate(chapters) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1]
    return train, val


def train_tokenizer(chapters: list[str], vocab_size: int, out: Path) -> Path:
    """Trains a LLaMA-2-style SentencePiece BPE model (<unk>/<s>/</s> = 0/1/2, byte fallback)
    on the verses of the chapters; writes out/tokenizer.model and tokenizer_config.json."""
    import json

    import sentencepiece as spm

    sentences = [s for ch in chapters for s in re.split(r"(?<=[.;:?!]) ", ch)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tokenizer.model"
    path.write_bytes(buf.getvalue())
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
                "tokenizer_class": "LlamaTokenizer",
            },
            indent=1,
        )
    )
    return path
