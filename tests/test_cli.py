"""The search-space command line: as a user runs it (subprocess, unrelated directory) and in-process."""
import json
import subprocess
import sys

import pytest

from search_space import Genotype, SearchSpace
from search_space.genotype_cli import main


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "search_space", *args], capture_output=True, text=True, cwd=cwd)


def test_sample_describe_mutate_size(tmp_path):
    out = run("sample", "--n", "4", "--seed", "11", "--k", "6", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4
    genotypes = [Genotype.from_json(line) for line in lines]
    assert [g.arch_hash for g in genotypes] == [g.arch_hash for g in SearchSpace().sample_many(4, seed=11)]

    path = tmp_path / "g.json"
    path.write_text(lines[0])
    for arg in (lines[0], str(path)):
        out = run("describe", arg, "--width", "8", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert info["arch_hash"] == genotypes[0].arch_hash
        assert info["params"] > 0 and info["flops"] > 0

    out = run("mutate", str(path), "--seed", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert Genotype.from_json(out.stdout).arch_hash != genotypes[0].arch_hash

    out = run("size", "--k", "6", cwd=tmp_path)
    assert json.loads(out.stdout)["edge_configurations_log2"] == 45


@pytest.mark.parametrize(
    "args, message",
    [
        (["describe", "{oops"], "malformed JSON"),
        (["describe", "does-not-exist.json"], "neither JSON text nor an existing file"),
        (["describe", '{"k": 6, "cells": [{"edges": [[0, 1]]}]}'], "cells: expected 3 cells"),
        (["describe", '{"cells": [{"ops": ["conv9x9"], "edges": [[0, 1]]}, {}, {}]}'],
         "cells[0].ops[0]: unknown operator"),
        (["describe", '{"k": 3, "cells": [{"edges": [[1, 0]]}, {"edges": [[0, 1]]}, {"edges": [[0, 1]]}]}'],
         "cells[0].edges[0]: edge [1, 0] must go from a lower to a higher vertex"),
        (["describe", '{"k": 3, "cells": [{"edges": [[0, 3]]}, {"edges": [[0, 1]]}, {"edges": [[0, 1]]}]}'],
         "cells[0].edges[0]: vertex 3 out of range"),
        (["mutate", '{"k": 3, "cells": [{"edges": [[0, 1]]}, {"edges": [[0, 1]]}, {"edges": [[0, 1]]}]}',
          "--kind", "op"], "kind: unknown mutation 'op'"),
        (["sample", "--k", "1"], "k: expected an integer >= 2"),
        (["describe", '{"k": 3, "cells": [{"edges": [[0, 1]]}, {"edges": [[0, 1]]}, {"edges": [[0, 1]]}]}',
          "--input-size", "4"], "--input-size: expected >= 8"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, args, message):
    assert main(args) == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.err


def test_bad_input_exit_code_of_the_module(tmp_path):
    out = run("describe", "{oops", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "malformed JSON" in out.stderr
