"""The docstring examples print what they claim (they are run as doctests)."""

import doctest

import pytest
import torch

import diffcomb
import diffcomb.isotonic
import diffcomb.losses.isotonic
import diffcomb.softdtw


@pytest.mark.parametrize("module", [diffcomb.isotonic, diffcomb.losses.isotonic, diffcomb.softdtw], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"torch": torch, "diffcomb": diffcomb},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
