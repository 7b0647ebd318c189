import pytest

from search_space import OPS
from search_space.registry import Registry
from trainables import OBJECTIVES, PROTOCOLS, SCORES


def test_register_lookup_and_errors():
    reg = Registry("widget")
    reg.register("a")(len)
    assert reg.lookup("a") is len and list(reg) == ["a"]
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(len)
    with pytest.raises(ValueError, match="widget: unknown 'b'; valid: a"):
        reg.lookup("b")


@pytest.mark.parametrize("registry", [OPS, OBJECTIVES, SCORES, PROTOCOLS], ids=lambda r: r.kind)
def test_project_registries_are_populated(registry):
    assert isinstance(registry, Registry) and len(registry) >= 4
