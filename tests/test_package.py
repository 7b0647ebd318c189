"""Packaging, README, CI and platform/ invariants."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_packages_import_from_any_directory(tmp_path):
    code = "import search_space, trainables, pipelines, platform; print(platform.system())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()  # the standard library's platform, not ours


def test_platform_is_not_a_python_package():
    assert (ROOT / "platform").is_dir()
    assert not list((ROOT / "platform").rglob("*.py")), "platform/ must hold no Python modules"
    out = subprocess.run([sys.executable, "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == ".".join(map(str, sys.version_info[:3]))


@pytest.mark.parametrize("name", ["cluster.yaml", "kuberay-raycluster.yaml", "runtime_env.yaml"])
def test_platform_yaml_parses(name):
    docs = list(yaml.safe_load_all((ROOT / "platform" / name).read_text()))
    assert docs and all(isinstance(d, dict) for d in docs if d is not None)


def test_mlflow_server_script_is_valid_bash():
    script = ROOT / "platform" / "mlflow-server.sh"
    assert script.stat().st_mode & 0o111, "executable"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    main_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert main_cmd == "pip install -e . && python pipelines/dcsod.py"
    commands = [part.strip() for part in test_cmd.split("&&")]
    assert commands[0].startswith("pip install") and "ruff check ." in commands and commands[-1] == "pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    where = []
    for command in commands:  # each one a command line of .ci/run (bare or as an `if !` condition), in order
        found = re.search(rf"^\s*(?:if ! )?{re.escape(command)}(?:; then)?$", ci, flags=re.M)
        assert found, f".ci/run does not run {command!r}"
        where.append(found.start())
    assert where == sorted(where), ".ci/run runs the README's commands in another order"
    assert "-eq 5" in ci, "CI treats 'no tests collected' as a failure"


def test_dcsod_entry_point_runs_as_a_script_from_anywhere(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "pipelines" / "dcsod.py"), "--help"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "--preset" in out.stdout and "--resume" in out.stdout
    assert list(tmp_path.iterdir()) == []
