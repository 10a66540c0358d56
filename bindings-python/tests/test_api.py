"""The public surface: stubs cover every public name of the native module, every public
method has a docstring, help() shows them, and the README's pytest example runs as a
user would paste it (outside this repository's conftest and pytest settings)."""

from __future__ import annotations

import ast
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import etcd_recipes
import etcd_recipes._native as native

from waiting import tail

STUB = Path(etcd_recipes.__file__).with_name("_native.pyi")
PROTOCOL = {"__aenter__", "__aexit__", "__aiter__", "__anext__", "__await__", "__len__", "__contains__",
            "__enter__", "__exit__"}


def stub_tree() -> tuple[dict[str, set[str]], set[str]]:
    tree = ast.parse(STUB.read_text())
    classes: dict[str, set[str]] = {}
    functions: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = {m.name for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
            classes[node.name] |= {m.target.id for m in node.body
                                   if isinstance(m, ast.AnnAssign) and isinstance(m.target, ast.Name)}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.add(node.name)
    return classes, functions


def public_native() -> dict[str, object]:
    return {n: getattr(native, n) for n in dir(native) if not n.startswith("_")}


def test_stubs_cover_the_native_module() -> None:
    classes, functions = stub_tree()
    missing = []
    for name, obj in public_native().items():
        if inspect.isclass(obj):
            if name not in classes:
                missing.append(name)
                continue
            if issubclass(obj, BaseException):
                continue
            for attr in vars(obj):
                if (not attr.startswith("_") or attr in PROTOCOL) and attr not in classes[name]:
                    missing.append(f"{name}.{attr}")
            missing += [f"{name}.{m} (stub only)" for m in classes[name] if not hasattr(obj, m)]
        elif callable(obj) and name not in functions:
            missing.append(name)
    assert missing == []


def test_every_public_method_has_a_docstring() -> None:
    undocumented = []
    for name, obj in public_native().items():
        if not inspect.isclass(obj):
            continue
        if not obj.__doc__:
            undocumented.append(name)
        if issubclass(obj, BaseException):
            continue
        for attr, member in vars(obj).items():
            if not attr.startswith("_") and not getattr(member, "__doc__", None):
                undocumented.append(f"{name}.{attr}")
    assert undocumented == []


def test_package_exports() -> None:
    assert sorted(etcd_recipes.__all__) == sorted(set(etcd_recipes.__all__))
    for name in etcd_recipes.__all__:
        assert getattr(etcd_recipes, name) is not None
    # Everything public in the native module (but the test harness) is exported.
    harness = {"EtcdCluster", "TestCerts", "etcd_binary_path", "etcd_binary_version"}
    assert set(public_native()) - harness - {"__version__"} <= set(etcd_recipes.__all__)
    assert (Path(etcd_recipes.__file__).parent / "py.typed").is_file()


def test_help_shows_docstrings() -> None:
    p = subprocess.run([sys.executable, "-c", "import etcd_recipes; help(etcd_recipes.Client)"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PAGER="cat", TERM="dumb"))
    assert p.returncode == 0, tail(p.stderr)
    for text in ["A connection to etcd shared by every recipe", "Connect and wait until etcd answers",
                 "A distributed lock called `name`", "A local, watched copy of `key`"]:
        assert text in p.stdout, f"{text!r} not in help() output of {len(p.stdout)} chars: {tail(p.stdout, 1000)}"


def test_readme_pytest_example_runs_as_pasted(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).parent / "readme" / "test_my_service.py", tmp_path)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_service.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, tail(p.stdout + p.stderr)
    assert "1 passed" in p.stdout, tail(p.stdout)


def test_top_level_readme_shows_the_tested_python_code() -> None:
    """The repository README's Python blocks are, verbatim, files this suite runs."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    quickstart = (root / "examples" / "python" / "quickstart.py").read_text()
    pytest_example = (pathlib.Path(__file__).parent / "readme" / "test_my_service.py").read_text()
    assert any(b.strip() in quickstart for b in blocks if "asyncio.run(main())" in b)
    assert any(b.strip() in pytest_example for b in blocks if "def test_my_service" in b)
    sync_quickstart = (root / "examples" / "python" / "sync_quickstart.py").read_text()
    sync_blocks = [b for b in blocks if "from etcd_recipes import sync" in b]
    assert sync_blocks and all(b.strip() in sync_quickstart for b in sync_blocks)
