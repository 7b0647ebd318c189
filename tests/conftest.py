import os
from pathlib import Path

import pytest

# Keep CPU tests from oversubscribing the 2-core CI machine: 2 threads, or 1 per worker when pytest-xdist runs
# several test processes at once (pyproject's addopts: -n 2).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", "1" if _WORKERS > 1 else "2")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs, no dashboard) shared by every test of this test process that needs Ray; shut
    down at the end. ``address="local"``: a new instance, never a cluster another test started with ``ray start``."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


#: Test modules whose tests are independent end-to-end runs (no module-scoped fixture): pytest-xdist may spread
#: them over its workers one test at a time. Every other module runs whole on one worker, so its module-scoped
#: fixtures (a submitted DCSOD job, MLflow servers, trained models) are built once.
SPREAD_MODULES = {"test_experiments.py", "test_faults.py"}


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope`` (pyproject's addopts) with a module as the scope, except in :data:`SPREAD_MODULES`,
    where each test is its own. (``xdist_group`` markers would do this, but pytest-xdist 3.8 cannot rename the node
    ids of pytest 9, so ``--dist loadgroup`` silently spreads every test.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return ModuleScheduling(config, log)


def xdist_scope(nodeid: str) -> str:
    """The unit pytest-xdist hands to one worker: the test's module path, or the test itself in a spread module."""
    module = nodeid.split("::", 1)[0]
    return nodeid if Path(module).name in SPREAD_MODULES else module
