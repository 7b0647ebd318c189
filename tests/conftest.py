import os

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
#: them over its workers one test at a time. Every other module stays on one worker (``--dist loadgroup``), so its
#: module-scoped fixtures (a submitted DCSOD job, MLflow servers, trained models) are built once.
SPREAD_MODULES = {"test_experiments.py", "test_faults.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name not in SPREAD_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.path.name))

