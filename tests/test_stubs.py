"""The shipped type stubs of the native modules match their bindings (named arguments, types)."""

import importlib
import pathlib

import pytest

from diffcomb import _native, _stubgen


@pytest.mark.parametrize("module_name", _stubgen.MODULES)
def test_stub_matches_module(module_name):
    if module_name == "_C_cuda" and not _native.cuda_available():
        pytest.skip("diffcomb was built without CUDA: no _C_cuda to compare its stub with")
    path = pathlib.Path(importlib.import_module("diffcomb").__file__).parent / f"{module_name}.pyi"
    assert path.exists(), f"{path} is not installed"
    assert path.read_text() == _stubgen.render(module_name), "run python -m diffcomb._stubgen"
