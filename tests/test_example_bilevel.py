"""examples/bilevel_hypergradient.py: the hypergradient through unrolled soft-DTW training is exact, and
hypergradient descent lowers the validation objective (a small setting), and the script runs."""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "bilevel_hypergradient.py"


@pytest.fixture(autouse=True)
def _one_thread():
    # Small problems: one thread (as the script uses) avoids the parallel regions' overhead.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _example():
    spec = importlib.util.spec_from_file_location("bilevel_hypergradient", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hypergradient_matches_finite_differences():
    ex = _example()
    train, validation, _ = ex.load_series(8, 30, 0, 1, torch.float64)
    for decay in (1e-2, 0.3):
        theta = torch.tensor(math.log(decay), dtype=torch.float64)
        g, value = ex.hypergradient(theta, train, validation, 6, 0.1, 0.1)
        h = 1e-5
        plus = ex.validation_after_training(theta + h, train, validation, 6, 0.1, 0.1)
        minus = ex.validation_after_training(theta - h, train, validation, 6, 0.1, 0.1)
        torch.testing.assert_close(g, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-10)
        torch.testing.assert_close(value, ex.validation_after_training(theta, train, validation, 6, 0.1, 0.1))
        assert g.abs() > 1e-6  # the weight decay matters: a zero hypergradient would test nothing


def test_hypergradient_descent_lowers_the_validation_objective():
    ex = _example()
    result = ex.run(outer_steps=4, inner_steps=6, train_size=8, validation_size=30, test_size=0, decay=1e-2,
                    outer_lr=0.5, seed=1, dtype=torch.float64, verbose=False)
    assert result["validation_end"] < result["validation_start"]


def test_script_runs():
    out = subprocess.run([sys.executable, str(SCRIPT), "--outer-steps", "2", "--inner-steps", "3", "--train", "6",
                          "--validation", "10", "--test", "10", "--check"], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "learned weight decay" in out.stdout and "validation objective" in out.stdout
    assert "central finite differences" in out.stdout
