"""The docstring examples print what they claim (they are run as doctests)."""

import doctest

import pytest
import torch

import diffcomb
import diffcomb.isotonic
import diffcomb.losses.isotonic
import diffcomb.nn.softdtw
import diffcomb.softdtw
import diffcomb.softdtw.costs
import diffcomb.softdtw.functional


MODULES = [diffcomb.isotonic, diffcomb.losses.isotonic, diffcomb.softdtw, diffcomb.softdtw.costs,
           diffcomb.softdtw.functional, diffcomb.nn.softdtw]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"torch": torch, "diffcomb": diffcomb},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
