"""The docstring examples print what they claim (they are run as doctests): every module of
diffcomb, and one example at least for every public name (diffcomb, diffcomb.nn, diffcomb.losses)."""

import doctest
import importlib
import pkgutil
import sys

import pytest
import torch

import diffcomb
import diffcomb.losses
import diffcomb.nn

GLOBS = {"torch": torch, "diffcomb": diffcomb}
FLAGS = doctest.NORMALIZE_WHITESPACE

# Every module of the package; ``__main__`` modules run a program when imported.
MODULES = sorted(m.name for m in pkgutil.walk_packages(diffcomb.__path__, "diffcomb.")
                 if not m.name.endswith("__main__"))
# The modules that hold examples today: each must keep at least one (a module that loses them all fails).
WITH_EXAMPLES = {
    "diffcomb.fenchel_young", "diffcomb.isotonic", "diffcomb.losses.isotonic", "diffcomb.losses.perturb",
    "diffcomb.losses.sortnet", "diffcomb.nn.isotonic", "diffcomb.nn.perturb", "diffcomb.nn.ranking",
    "diffcomb.nn.sinkhorn", "diffcomb.nn.softdtw", "diffcomb.nn.sortnet", "diffcomb.nn.topk",
    "diffcomb.perturb.blackbox_solver", "diffcomb.perturb.imle_solver", "diffcomb.perturb.noise",
    "diffcomb.perturb.perturbed_solver", "diffcomb.perturb.solvers", "diffcomb.ranking", "diffcomb.softdtw",
    "diffcomb.softdtw.barycenter", "diffcomb.softdtw.costs", "diffcomb.softdtw.functional", "diffcomb.sortnet",
    "diffcomb.topk", "diffcomb.transport", "diffcomb.transport_permutation", "diffcomb.transport_sort",
}


def public_names():
    """(namespace, name, object) of every public name of diffcomb, diffcomb.nn and diffcomb.losses."""
    for namespace in (diffcomb, diffcomb.nn, diffcomb.losses):
        for name in namespace.__all__:
            yield namespace.__name__, name, getattr(namespace, name)


def test_module_list_is_complete():
    assert WITH_EXAMPLES <= set(MODULES)
    assert len(MODULES) > 40  # walk_packages found the whole package, subpackages included


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=GLOBS, optionflags=FLAGS)
    assert result.failed == 0
    if name in WITH_EXAMPLES:
        assert result.attempted > 0


@pytest.mark.parametrize("namespace,name,obj", list(public_names()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_name_has_an_example_that_runs(namespace, name, obj):
    """The object's own docstring (not a method's, not the module's) holds an example, and it runs
    (in its module's globals, as doctest.testmod runs it)."""
    globs = {**vars(sys.modules[obj.__module__]), **GLOBS}
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs=globs)
    examples = sum(len(t.examples) for t in tests)
    assert examples > 0, f"{namespace}.{name} has no docstring example"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0
