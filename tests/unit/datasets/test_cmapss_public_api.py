"""Ratchet: every public function and class of the C-MAPSS modules is exercised by name in these tests."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

from enginehub.datasets import cli, cmapss, codecs, labels, schema, synthetic

MODULES = (schema, cmapss, codecs, synthetic, labels, cli)
HERE = Path(__file__).parent
TEST_TEXT = "\n".join(
    p.read_text(encoding="utf-8") for p in HERE.glob("test_*.py") if p.name != Path(__file__).name
)
TEST_TEXT += (HERE.parents[1] / "integration" / "test_datasets_cli.py").read_text(encoding="utf-8")


def public_callables(module: ModuleType) -> list[str]:
    names = []
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) == module.__name__:
            names.append(name)
    return sorted(names)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_public_name_is_used_by_a_test(module: ModuleType) -> None:
    names = public_callables(module)
    assert names, module.__name__
    # Exceptions and data classes count when constructed or matched; functions when called or passed.
    missing = [n for n in names if not re.search(rf"\b{re.escape(n)}\b", TEST_TEXT)]
    # cli.main is driven through argv; build_parser through it.
    missing = [n for n in missing if (module, n) != (cli, "build_parser")]
    assert not missing, f"{module.__name__}: no test names {missing}"


def test_core_modules_need_only_the_standard_library() -> None:
    for module in (schema, cmapss, codecs, synthetic, cli):
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        imports = re.findall(r"^\s*(?:from|import) ([a-zA-Z_][\w.]*)", source, re.M)
        third_party = (
            {i.split(".")[0] for i in imports}
            - {"enginehub", "__future__"}
            - set(__import__("sys").stdlib_module_names)
        )
        assert not third_party, f"{module.__name__} imports {third_party}"
