"""β schedules: contract over every registered schedule and ramp, cycle facts, equivalences, per-schedule R,
β_max and the AE baseline, cyclical LR."""
import itertools
import math

import pytest

from search_space.registry import RegistryError
from trainables.text.beta_schedules import RAMPS, SCHEDULES, cycle_position, cyclical_lr, make_schedule, schedule_entry

ANNEALED = [name for name in SCHEDULES if name != "ae"]


@pytest.mark.parametrize("shape", list(RAMPS))
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_schedule_is_a_weight_in_unit_interval_ending_at_one(name, shape):
    total = 97
    beta = make_schedule(name, total, cycles=3, ratio=0.4, monotonic_ratio=0.3, shape=shape)
    betas = [beta(t) for t in range(1, total + 1)]
    assert all(0.0 <= b <= 1.0 for b in betas)
    # every schedule ends the run at the full ELBO (R < 1), but the autoencoder, which never weighs the KL
    assert betas[-1] == (0.0 if name == "ae" else 1.0)
    assert [beta.level(t) * beta.beta_max for t in range(1, total + 1)] == betas


@pytest.mark.parametrize("shape", list(RAMPS))
def test_ramps_run_from_zero_to_one_monotonically(shape):
    f = RAMPS[shape]
    values = [f(i / 100) for i in range(101)]
    assert values[0] == pytest.approx(0.0, abs=1e-12) and values[-1] == pytest.approx(1.0)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("shape", list(RAMPS))
@pytest.mark.parametrize("total, cycles, ratio", [(100, 4, 0.5), (1000, 5, 0.3), (90, 3, 0.8), (37, 2, 0.25)])
def test_cyclical_is_zero_at_each_cycle_start_and_one_after_ratio(shape, total, cycles, ratio):
    beta = make_schedule("cyclical", total, cycles=cycles, ratio=ratio, shape=shape)
    period = math.ceil(total / cycles)
    starts = list(range(1, total + 1, period))
    assert len(starts) == cycles
    for start in starts:
        assert beta(start) == 0.0
        inside = [t for t in range(start, min(start + period, total + 1))]
        for t in inside:
            tau = cycle_position(t, total, cycles)
            if tau >= ratio:
                assert beta(t) == 1.0
            else:
                assert beta(t) < 1.0
        ramp = [beta(t) for t in inside if cycle_position(t, total, cycles) < ratio]
        assert all(b >= a for a, b in itertools.pairwise(ramp)), "β rises within a cycle"
        assert any(beta(t) == 1.0 for t in inside), "β reaches 1 inside every cycle"


def test_cyclical_formula_by_hand():
    # T = 10, M = 2: period ceil(10/2) = 5, tau = ((t-1) mod 5) / 5; R = 0.5, linear f(u) = u with u = tau / R
    beta = make_schedule("cyclical", 10, cycles=2, ratio=0.5)
    assert [beta(t) for t in range(1, 11)] == pytest.approx([0, 0.4, 0.8, 1, 1, 0, 0.4, 0.8, 1, 1])


@pytest.mark.parametrize("ratio", [0.01, 0.05, 0.2, 0.25])
def test_one_cycle_with_small_ratio_equals_monotonic(ratio):
    total = 500
    cyc = make_schedule("cyclical", total, cycles=1, ratio=ratio)
    mono = make_schedule("monotonic", total, monotonic_ratio=ratio)
    assert [cyc(t) for t in range(1, total + 1)] == pytest.approx([mono(t) for t in range(1, total + 1)])


@pytest.mark.parametrize("name", ANNEALED)
@pytest.mark.parametrize("shape", list(RAMPS))
def test_ratio_zero_equals_constant(name, shape):
    total = 60
    beta = make_schedule(name, total, cycles=4, ratio=0.0, monotonic_ratio=0.0, shape=shape)
    assert [beta(t) for t in range(1, total + 1)] == [1.0] * total


# --- per-schedule R (thesis §2.6.1) --------------------------------------------------------------------------
@pytest.mark.parametrize("epochs, batches", [(40, 10), (40, 1), (8, 25), (100, 50)])
def test_monotonic_ramp_reaches_one_at_exactly_a_quarter_of_training_by_default(epochs, batches):
    """The thesis's baseline: β 0 -> 1 over the first 10 of 40 epochs, i.e. R = 0.25 of the run, while the
    cyclical schedule keeps its R = 0.5 per cycle; both are the defaults."""
    total = epochs * batches
    beta = make_schedule("monotonic", total)
    first_one = next(t for t in range(1, total + 1) if beta(t) == 1.0)
    assert (first_one - 1) / total == 0.25  # the iterations done before β is 1: exactly 25 % of the run
    assert all(beta(t) < 1.0 for t in range(1, first_one)) and beta(1) == 0.0
    assert all(beta(t) == 1.0 for t in range(first_one, total + 1))
    cyc = make_schedule("cyclical", total, cycles=1)
    assert next(t for t in range(1, total + 1) if cyc(t) == 1.0) - 1 == total // 2  # cyclical: R = 0.5


def test_each_schedule_reads_its_own_ratio():
    total = 120
    default = make_schedule("monotonic", total)
    for other in (0.1, 0.9):
        mono = make_schedule("monotonic", total, ratio=other, monotonic_ratio=0.25)
        assert [mono(t) for t in range(1, total + 1)] == [default(t) for t in range(1, total + 1)]
        cyc = make_schedule("cyclical", total, cycles=3, ratio=0.5, monotonic_ratio=other)
        ref = make_schedule("cyclical", total, cycles=3, ratio=0.5)
        assert [cyc(t) for t in range(1, total + 1)] == [ref(t) for t in range(1, total + 1)]
    assert make_schedule("monotonic", 100, monotonic_ratio=0.5)(26) == 0.5


# --- β_max and the autoencoder (Table 2.1) -------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(RAMPS))
@pytest.mark.parametrize("name", ANNEALED)
@pytest.mark.parametrize("beta_max", [0.5, 0.2, 1.0])
def test_beta_never_exceeds_beta_max_and_reaches_it(name, shape, beta_max):
    total = 97
    beta = make_schedule(name, total, cycles=3, ratio=0.4, beta_max=beta_max, shape=shape)
    betas = [beta(t) for t in range(1, total + 1)]
    assert max(betas) == pytest.approx(beta_max) and all(0.0 <= b <= beta_max for b in betas)
    assert betas[-1] == pytest.approx(beta_max)
    full = make_schedule(name, total, cycles=3, ratio=0.4, shape=shape)
    assert betas == pytest.approx([beta_max * full(t) for t in range(1, total + 1)])
    assert [beta.level(t) for t in range(1, total + 1)] == [full(t) for t in range(1, total + 1)]


def test_an_entry_may_carry_its_own_beta_max():
    assert schedule_entry("cyclical@0.5") == ("cyclical", 0.5)
    assert schedule_entry("cyclical", 0.3) == ("cyclical", 0.3) and schedule_entry("ae@1", 0.3) == ("ae", 1.0)
    total = 40
    half = make_schedule("cyclical@0.5", total, beta_max=1.0)
    ref = make_schedule("cyclical", total, beta_max=0.5)
    assert [half(t) for t in range(1, total + 1)] == [ref(t) for t in range(1, total + 1)] and half.beta_max == 0.5
    with pytest.raises(RegistryError, match=r"^beta schedule 'cyclical@half': after '@' comes the entry's β_max"):
        make_schedule("cyclical@half", total)
    with pytest.raises(RegistryError, match=r"^beta schedule 'cyclical': beta_max must lie in \[0, 1\], got 2.0$"):
        make_schedule("cyclical@2", total)
    with pytest.raises(RegistryError, match="unknown 'cycle'; valid: constant, monotonic, cyclical, ae"):
        make_schedule("cycle@0.5", total)


@pytest.mark.parametrize("beta_max", [1.0, 0.5])
def test_the_autoencoder_schedule_is_all_zeros(beta_max):
    total = 53
    beta = make_schedule("ae", total, cycles=2, ratio=0.3, monotonic_ratio=0.0, beta_max=beta_max)
    assert [beta(t) for t in range(1, total + 1)] == [0.0] * total
    assert [beta.level(t) for t in range(1, total + 1)] == [0.0] * total  # K stays at k_min too


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("kwargs, message", [
    ({"shape": "step"}, "ramp shape: unknown 'step'; valid: linear, sigmoid, cosine"),
    ({"ratio": 1.5}, "ratio must lie in [0, 1], got 1.5"),
    ({"cycles": 0}, "cycles must be >= 1, got 0"),
    ({"monotonic_ratio": -0.1}, "monotonic_ratio must lie in [0, 1], got -0.1"),
    ({"beta_max": 1.5}, "beta_max must lie in [0, 1], got 1.5"),
])
def test_bad_arguments_are_one_line_errors_naming_the_schedule(name, kwargs, message):
    with pytest.raises(RegistryError) as err:
        make_schedule(name, 10, **kwargs)
    assert str(err.value) == f"beta schedule {name!r}: {message}"


def test_t_outside_the_run_is_an_error():
    beta = make_schedule("cyclical", 10)
    with pytest.raises(ValueError, match="t <= total"):
        beta(11)
    with pytest.raises(ValueError, match="t <= total"):
        beta(0)


def test_cyclical_lr_restarts_with_beta():
    total, cycles = 100, 4
    beta = make_schedule("cyclical", total, cycles=cycles, ratio=0.5)
    lrs = [cyclical_lr(t, total, cycles=cycles, lr_max=1e-3, lr_min=1e-5) for t in range(1, total + 1)]
    for t in range(1, total + 1):
        if beta(t) == 0.0:
            assert lrs[t - 1] == pytest.approx(1e-3)  # cycle start: highest lr
    assert min(lrs) >= 1e-5 and max(lrs) <= 1e-3
    assert lrs[24] < lrs[10] < lrs[0]  # decays within the first cycle (period 25)
