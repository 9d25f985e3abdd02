"""The distribution installs one name, `kes`, with its console script and its data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("kes-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_only_the_kes_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"kes"}
    for module in ("streams/core/behavior.py", "streams/cli/__main__.py", "topology/layout.py",
                   "stores/snapshots.py", "schemas/kes/v1/envelopes_pb2.py",
                   "examples/bank/domain.py"):  # fmt: skip
        assert f"kes/{module}" in names
    assert not [n for n in names if n.startswith("kes/") and n.count("/") == 1 and "py" in n]


def test_the_wheel_carries_the_data_files_and_the_console_script(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    for data in ("topology/broker/pom.xml", "topology/broker/log4j.properties",
                 "streams/web/static/index.html", "streams/py.typed"):  # fmt: skip
        assert f"kes/{data}" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "kes = kes.streams.cli.commands:main" in wheel.read(entry_points).decode()


def test_the_old_top_level_names_do_not_import(tmp_path: Path) -> None:
    """Outside the repository, `streams`, `topology`, ... are not importable names of kes."""
    script = (
        "import importlib.util, json\n"
        "print(json.dumps([n for n in ('streams', 'topology', 'stores', 'schemas', 'examples')"
        " if importlib.util.find_spec(n) is not None]))\n"
        "import kes.streams.cli\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
