"""Bounded inputs (issue 14): suite files are regular files of bounded size whose YAML stays
small once aliases are expanded; the same file check serves dataset files."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cdlbench.suite import SuiteError, load_yaml
from cdlbench.suite.yaml_loading import MAX_NODES, MAX_SUITE_BYTES, check_regular_file, count_nodes

ROOT = Path(__file__).resolve().parents[2]


def alias_bomb() -> str:
    """500 bytes; 10^9 leaves once every alias is expanded."""
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for level in range(1, 10):
        prev, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    return text


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size <= 600
    start = time.perf_counter()
    with pytest.raises(SuiteError, match="more than 100000 YAML nodes once aliases are expanded") as info:
        load_yaml(path)
    assert time.perf_counter() - start < 2.0
    assert info.value.file == str(path)


def test_node_count_expands_aliases_by_multiplicity(tmp_path):
    import yaml

    node = yaml.compose("a: &x [1, 2, 3]\nb: [*x, *x]\n")
    # root, a, [1,2,3] (4 nodes), b, [*x, *x] (1 + 2 * 4)
    assert count_nodes(node) == 1 + (1 + 4) + (1 + 1 + 2 * 4)
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {name: ddpm, steps: 10}\nsamplers: [*b, *b, *b]\n")
    assert load_yaml(ok)["samplers"][2] == {"name": "ddpm", "steps": 10}      # small aliases still load
    assert MAX_NODES == 100_000


def _load_in_thread(path: Path, timeout: float):
    result = {}

    def target():
        try:
            load_yaml(path)
            result["value"] = "loaded"
        except SuiteError as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return thread, result


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_suite_path_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)
    thread, result = _load_in_thread(fifo, 5.0)
    if thread.is_alive():                    # the old behaviour: blocked opening the FIFO; release it
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(5.0)
        pytest.fail("loading a FIFO suite path blocked")
    assert "error" in result, result
    assert "must be a regular file" in str(result["error"]) and "FIFO" in str(result["error"])
    assert str(fifo) in str(result["error"])


def test_an_oversized_suite_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    line = "# " + "x" * 1000 + "\n"
    path.write_text("name: big\n" + line * (MAX_SUITE_BYTES // len(line) + 10))
    with pytest.raises(SuiteError, match=r"the suite file is 4\.0 MB; at most 4\.0 MB is allowed") as info:
        load_yaml(path)
    assert info.value.file == str(path)


def test_dev_zero_and_a_directory_are_refused(tmp_path):
    """Run in a child with a memory limit and a timeout: reading /dev/zero to its end never ends."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "from cdlbench.suite import SuiteError, load_yaml\n"
            "try:\n    load_yaml('/dev/zero')\nexcept SuiteError as exc:\n    print(exc); sys.exit(0)\n"
            "sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "/dev/zero: the suite file must be a regular file" in proc.stdout and "character device" in proc.stdout
    with pytest.raises(SuiteError, match="must be a regular file .*this is a directory"):
        load_yaml(tmp_path)


def test_check_regular_file_for_dataset_files(tmp_path):
    data = tmp_path / "points.csv"
    data.write_text("0,1\n1,0\n")
    assert check_regular_file(data, "dataset file", 1024).st_size == 8
    with pytest.raises(SuiteError, match=r"points\.csv: the dataset file is 8 bytes; at most 4 bytes is allowed"):
        check_regular_file(data, "dataset file", 4)
    with pytest.raises(SuiteError, match="the dataset file must be a regular file .*a directory"):
        check_regular_file(tmp_path, "dataset file", 1024)
    with pytest.raises(SuiteError, match="cannot read the dataset file"):
        check_regular_file(tmp_path / "missing.csv", "dataset file", 1024)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe")
        with pytest.raises(SuiteError, match="FIFO"):
            check_regular_file(tmp_path / "pipe", "dataset file", 1024)


def test_shipped_suites_still_load():
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        assert isinstance(load_yaml(path), dict), path


@pytest.mark.parametrize("change, field", [({"train": {"steps": 2_000_000_000}}, "train.steps"),
                                           ({"seeds": list(range(2000))}, "seeds"),
                                           ({"metrics": {"name": "mmd", "n_samples": 10 ** 9}}, "metrics.n_samples"),
                                           ({"model": {"name": "mlp", "width": 10 ** 7}}, "model.width")])
def test_work_fields_have_upper_bounds(change, field):
    import yaml as _yaml

    from cdlbench.suite import SuiteError, parse_suite

    base = _yaml.safe_load((Path(__file__).resolve().parents[2] / "suites" / "smoke.yaml").read_text())
    with pytest.raises(SuiteError, match=f"field '{field}'.*(<=|at most)"):
        parse_suite({**base, **change})


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_image_set_that_is_a_fifo_is_refused(tmp_path):
    from cdlbench.datasets.images import ImageSetError, read_image_set

    fifo = tmp_path / "set.npz"
    os.mkfifo(fifo)
    with pytest.raises(ImageSetError, match="regular file"):
        read_image_set(fifo)
