"""The public surface: the _core stub matches the extension, the package exports what the
docs promise, options are keyword-only."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import bitnet
from bitnet import _core

STUB = Path(bitnet.__file__).with_name("_core.pyi")


def _stub_names() -> dict[str, set[str]]:
    """Top-level names of the stub, and the members of each class."""
    tree = ast.parse(STUB.read_text())
    out: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {
                n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = set()
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.asname == alias.name:  # explicit re-export
                    out[alias.name] = set()
    return out


def _public(names) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def test_stub_lists_every_public_name_of_the_extension():
    stub = _stub_names()
    assert _public(dir(_core)) == _public(stub)


def test_stub_lists_every_public_member_of_each_class():
    for name, members in _stub_names().items():
        obj = getattr(_core, name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            assert _public(vars(obj)) == _public(members), name


def test_package_exports():
    for name in bitnet.__all__:
        assert hasattr(bitnet, name), name
    for name in ("load", "generate", "convert", "Model", "HubError", "TemplateError"):
        assert name in bitnet.__all__


def test_options_are_keyword_only():
    functions = [
        bitnet.load,
        bitnet.generate,
        bitnet.Model.generate,
        bitnet.Model.stream,
        bitnet.Model.chat,
        bitnet.Model.chat_stream,
        bitnet.Model.complete,
        bitnet.Model.submit,
        bitnet.Model.generate_batch,
        bitnet.Model.chat_complete,
        bitnet.Model.perplexity,
        bitnet.Model.tokenize,
    ]
    for fn in functions:
        params = list(inspect.signature(fn).parameters.values())
        positional = [p.name for p in params if p.kind is not p.KEYWORD_ONLY]
        assert len(positional) <= 2, (fn.__qualname__, positional)  # self and the subject


def test_public_functions_have_docstrings_with_args():
    for fn in (
        bitnet.load,
        bitnet.generate,
        bitnet.Model.generate,
        bitnet.Model.complete,
        bitnet.Model.submit,
        bitnet.Model.generate_batch,
        bitnet.Model.perplexity,
    ):
        doc = inspect.getdoc(fn) or ""
        assert "Args:" in doc and "Example" in doc, fn.__qualname__
