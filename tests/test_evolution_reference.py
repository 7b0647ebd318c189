"""What a mutated candidate is compared with (issue 13 item 4): the current best (thesis §4.3.1, the default) or
the chain's own state; the temperature as an acceptance probability; the setting from the preset to the
searcher's evolution."""
import math

import fake_stages
import numpy as np
import pytest

from pipelines.common.settings import ConfigError
from pipelines.nas.settings import load_config
from search_space import SearchSpace
from search_space.evolution import acceptance_probability, run_evolution
from search_space.searcher import PredictorEvolutionSearcher

SPACE = SearchSpace(k=6)


def two_chains(reference: str, temperature: float, seed: int = 0):
    """Chain 0 sits on the best architecture (score 1), chain 1 on a poor one (score 0); every other
    architecture scores 0.5: chain 1's proposal is better than its own state but worse than the best."""
    best, poor = SPACE.sample(seed=1), SPACE.sample(seed=2)
    table = {best.arch_hash: 1.0, poor.arch_hash: 0.0}

    def score(genotypes):
        return np.array([table.get(g.arch_hash, 0.5) for g in genotypes])

    return run_evolution(SPACE, score, population=2, generations=1, temperature=temperature, init=[best, poor],
                         reference=reference, seed=seed)


@pytest.mark.parametrize("temperature", [0.0, 0.05])
def test_best_reference_compares_with_the_best_not_the_chains_state(temperature):
    for seed in range(5):
        chain, best = two_chains("chain", temperature, seed), two_chains("best", temperature, seed)
        # chain 1's proposal (0.5) beats its state (0.0): always accepted against the chain; against the best
        # (1.0) it is 0.5 worse: probability exp(-0.5 / T) = 0 (T = 0) or e^-10 (T = 0.05)
        assert chain.history[0].accepted == 1 + best.history[0].accepted
        assert chain.history[0].mean_current == pytest.approx(0.75)  # chains at 1.0 and 0.5
        assert best.history[0].mean_current == pytest.approx(0.5)  # still at 1.0 and 0.0


def test_best_is_the_default_everywhere():
    import inspect

    assert inspect.signature(run_evolution).parameters["reference"].default == "best"
    assert PredictorEvolutionSearcher(metric="m", mode="max").evolution_args["reference"] == "best"
    assert load_config("quick")["search"]["reference"] == "best"
    with pytest.raises(ValueError, match="reference"):
        run_evolution(SPACE, lambda gs: np.zeros(len(gs)), reference="global")
    with pytest.raises(ValueError, match="reference"):
        PredictorEvolutionSearcher(metric="m", mode="max", reference="global")
    with pytest.raises(ConfigError, match="search.reference"):
        load_config("quick", ["search.reference=global"])


def test_documented_temperature_meaning():
    # T = 0.05 (AUROC as a fraction): 0.05 worse -> e^-1 ~ 0.37, 0.01 worse -> 0.82, 0.1 worse -> 0.14
    assert acceptance_probability(0.90, 0.85, 0.05) == pytest.approx(math.exp(-1)) == pytest.approx(0.368, abs=1e-3)
    assert acceptance_probability(0.90, 0.89, 0.05) == pytest.approx(0.819, abs=1e-3)
    assert acceptance_probability(0.90, 0.80, 0.05) == pytest.approx(0.135, abs=1e-3)


@pytest.fixture
def fake(monkeypatch):
    return fake_stages.install(monkeypatch)


@pytest.mark.parametrize("reference", ["best", "chain"])
def test_the_preset_setting_reaches_the_searchers_evolution(fake, monkeypatch, tmp_path, reference):
    import search_space.searcher

    seen = []
    real = search_space.searcher.evolve
    monkeypatch.setattr(search_space.searcher, "evolve", lambda *a, **k: seen.append(k["reference"]) or real(*a, **k))
    flow = fake_stages.make_flow(tmp_path, f"search.reference={reference}", "search.trials=2", "warmup.n=10")
    records, teachers = flow.distill(flow.warmup())
    flow.search(records, teachers)
    assert fake.stages[-1].searcher.evolution_args["reference"] == reference
    assert seen and set(seen) == {reference}
