"""`kepler-model report` and the report written at publish time, on real pipelines: what the folder
keeps (bounded), that the page rebuilds identically from the folder alone, carry-over of groups not
retrained, the estimation page, and every user error as one message and an exit code."""

from __future__ import annotations

import json
import re

import pytest

from kepler_trainer.report._heldout import MAX_ROWS
from tests.support.reports import GROUPS, REAL, TRAINERS, check, kepler_model, models_on_disk, train_all


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_all(tmp_path_factory.mktemp("report-cli"))


def test_publish_writes_the_page_and_a_bounded_held_out_sample_per_group(trained):
    pipeline = trained["models"] / "real"
    assert trained["summary"]["report"] == str(pipeline / "report.html")
    groups = {"_".join(k.split("/")[:3]) + ".json" for k in models_on_disk(pipeline)}
    assert {p.name for p in (pipeline / "report").iterdir()} == groups
    for path in (pipeline / "report").iterdir():
        sample = json.loads(path.read_text())
        assert len(sample["timestamp"]) <= min(MAX_ROWS, sample["rows"]) and path.stat().st_size < 64 * 1024
        for component in sample["components"]:
            assert len(sample["measured"][component]) == len(sample["predicted"][component]) == len(sample["timestamp"])
    blocks = json.loads((trained["models"] / "blocks" / "report" / "rapl-sysfs_AbsPower_CounterOnly.json").read_text())
    assert blocks["rows"] == 2202 and len(blocks["timestamp"]) == MAX_ROWS  # every row held out once, 400 drawn
    assert len(blocks["blocks"]) == 5 and sum(b["rows"] for b in blocks["blocks"]) == 2202
    # the metadata's energy sources are still only energy sources
    assert json.loads((pipeline / "metadata.json").read_text())["energy_sources"] == ["acpi", "rapl-sysfs"]


def test_best_model_of_each_group_is_the_one_sampled(trained):
    pipeline = trained["models"] / "real"
    on_disk = models_on_disk(pipeline)
    for path in (pipeline / "report").iterdir():
        group = path.stem.replace("_", "/", 2)
        candidates = {k: m for k, m in on_disk.items() if k.startswith(group + "/")}
        best = min(candidates.values(), key=lambda m: m["mae"])
        assert json.loads(path.read_text())["model_name"] == best["model_name"]


def test_page_is_self_contained(trained):
    page = (trained["models"] / "real" / "report.html").read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", page), "a link or source outside the page"
    assert "default-src 'none'" in page
    assert page.count('<svg class="chart"') == 2 * 2 * 2 * len(GROUPS.split(","))  # sources x types x groups x 2


def test_report_rebuilds_the_published_page_from_the_folder_alone(trained, tmp_path):
    work, published = trained["work"], (trained["models"] / "real" / "report.html").read_bytes()
    run = check(kepler_model("report", "-p", "real", "--data-path", str(work), "-o", str(tmp_path / "again.html")))
    assert run.stdout.startswith(f"report: {tmp_path / 'again.html'}")
    assert (tmp_path / "again.html").read_bytes() == published
    check(kepler_model("report", "-p", "real", "--data-path", str(work)))  # default: in place
    assert (trained["models"] / "real" / "report.html").read_bytes() == published


def test_groups_not_retrained_keep_their_held_out_sample(trained, tmp_path):
    log = tmp_path / "log.json"
    for groups in (GROUPS, "CounterOnly"):
        check(kepler_model("train", "-q", "-i", str(REAL), "-p", "again", "-e", "rapl-sysfs", "-fg", groups,
                           "--abs-trainers", TRAINERS, "--dyn-trainers", TRAINERS, "--data-path", str(tmp_path),
                           "--termination-log", str(log)))
    pipeline = tmp_path / "models" / "again"
    names = {p.name for p in (pipeline / "report").iterdir()}
    assert "rapl-sysfs_AbsPower_BPFOnly.json" in names and "rapl-sysfs_DynPower_BPFOnly.json" in names
    page = (pipeline / "report.html").read_text()
    assert 'data-group="rapl-sysfs/AbsPower/BPFOnly"' in page and "No held-out predictions" not in page


def test_estimation_writes_its_page_and_report_rebuilds_it(trained, tmp_path):
    folder = trained["estimation"]
    assert f"report: {folder / 'report.html'}" in trained["estimate_stdout"]
    check(kepler_model("report", "--estimation", "output", "--data-path", str(trained["work"]),
                       "-o", str(tmp_path / "e.html")))
    assert (tmp_path / "e.html").read_bytes() == (folder / "report.html").read_bytes()


@pytest.mark.parametrize("args, code, message", [
    (["-p", "nope"], 11, "no published pipeline 'nope'"),
    ([], 7, "report needs -p PIPELINE"),
    (["-p", "../x"], 7, "invalid pipeline name"),
    (["--estimation", "missing"], 3, "estimation_result.csv is missing"),
    (["-p", "real", "-o", "models"], 3, "cannot write the report"),
])
def test_user_errors_are_one_line_and_an_exit_code(trained, args, code, message):
    run = kepler_model("report", "--data-path", str(trained["work"]), *args)
    assert run.returncode == code, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr


def test_a_group_without_a_sample_is_said_so_and_hostile_text_is_escaped(trained, tmp_path):
    import shutil

    pipeline = tmp_path / "models" / "copy"
    shutil.copytree(trained["models"] / "real", pipeline)
    (pipeline / "report" / "acpi_AbsPower_BPFOnly.json").unlink()  # as carried over from an older version
    meta_file = next(pipeline.glob("rapl-sysfs/AbsPower/CounterOnly/*/metadata.json"))
    metadata = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**metadata, "kepler_weights": "<script>alert(1)</script>"}))
    check(kepler_model("report", "-p", "copy", "--model-path", str(tmp_path / "models")))
    page = (pipeline / "report.html").read_text()
    section = page[page.index('data-group="acpi/AbsPower/BPFOnly"'):]
    assert section[:section.index("</section>")].count("No held-out predictions were kept") == 1
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
