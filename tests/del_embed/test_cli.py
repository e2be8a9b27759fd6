"""``daimon-node del train|eval|figures|attack`` end to end on a tiny label file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from daimon_node.cli.app import app  # noqa: E402
from daimon_node.cli.embedding import DELCommandError  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("delcli")
    labels = root / "labels.npy"
    np.save(labels, np.random.default_rng(0).integers(0, 10, size=200))
    out = root / "model"
    res = runner.invoke(app, ["del", "train", "--labels", str(labels), "--out", str(out), "--steps", "40",
                              "--seed", "1", "--hidden", "16", "--n", "16", "--batch-size", "32", "--threads", "1"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["steps"] == 40 and Path(summary["artifact"]).is_file()
    return out, labels


def test_eval_prints_json_with_bands_and_baseline(trained_dir):
    out, labels = trained_dir
    res = runner.invoke(app, ["del", "eval", str(out), "--labels", str(labels), "--pairs", "10"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert {"mae", "pearson", "ranking_accuracy", "baseline", "bands"} <= report.keys()
    assert report["embedding"] == "f_int"
    assert set(report["bands"]["5-20%"]) == {"del", "baseline"}


def test_eval_with_wrong_label_count_is_a_user_error(trained_dir, tmp_path):
    out, _ = trained_dir
    other = tmp_path / "short.npy"
    np.save(other, np.zeros(10, dtype=np.int64))
    res = runner.invoke(app, ["del", "eval", str(out), "--labels", str(other)])
    assert isinstance(res.exception, DELCommandError)
    assert "m=200" in str(res.exception)


def test_bad_label_file_exits_1_with_one_line(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a label file")
    proc = subprocess.run(
        [sys.executable, "-c", "from daimon_node.cli.app import main; main()", "del", "eval", str(tmp_path), "--labels",
         str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")


def test_figures_writes_five_pngs_and_the_fig3_table(trained_dir, tmp_path):
    out, labels = trained_dir
    res = runner.invoke(app, ["del", "figures", "--out", str(tmp_path), "--model", str(out), "--labels", str(labels),
                              "--inverse-epochs", "1"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert len(report["figures"]) == 5
    for p in report["figures"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r["paper"] for r in report["fig3_ours_vs_paper"]} == {6.12e-13, 3.33e-93}


def test_attack_prints_rows_for_del_and_baseline(trained_dir):
    out, labels = trained_dir
    res = runner.invoke(app, ["del", "attack", str(out), "--labels", str(labels), "--seconds", "2",
                              "--inverse-epochs", "1"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert {(r["embedding"], r["method"]) for r in rows} >= {("DEL", "greedy"), ("baseline", "inverse")}
    assert all(0.0 <= r["end_error"] <= 1.0 for r in rows)
