"""The two-process test run (tests/conftest.py): which tests share a worker."""
import re
from pathlib import Path

from conftest import SPREAD_MODULES, xdist_scope

HERE = Path(__file__).resolve().parent


def test_a_module_is_one_unit_except_the_spread_ones():
    module = "tests/test_dcsod_pipeline.py"
    assert xdist_scope(f"{module}::test_outputs_follow_the_contract") == module
    assert xdist_scope("tests/test_ood.py::test_x[msp-1]") == "tests/test_ood.py"
    spread = "tests/test_experiments.py::test_table_4_1_ci"
    assert xdist_scope(spread) == spread


def test_spread_modules_have_no_module_or_class_scoped_fixture():
    """A spread module's tests run on either worker: a module fixture there would be built once per worker."""
    for name in SPREAD_MODULES:
        text = (HERE / name).read_text()
        assert not re.search(r"scope\s*=\s*[\"'](module|class|package)[\"']", text), name
