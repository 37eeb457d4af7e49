"""What the conformance tests share: the real pipelines, their artefacts, our own estimate of each model,
and the comparison with what Kepler's code computed.

Pipelines are trained by the real CLI on the bundled real data (tests/data/README.md): the 2023 dump
with every trainer (`all`, which includes the default ten) and both sources, and the two nx12 tables
(rapl CounterOnly AbsPower, acpi KubeletOnly DynPower) into one pipeline. `idle.json`, the other
bundled dump, has 5 usable rows: the trainer refuses it (too few samples), so it publishes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
DUMP = REPO / "tests" / "data" / "kepler-metrics" / "prom_response_2023.json"
NX12 = REPO / "tests" / "data" / "nx12"
NX12_TABLES = (("preprocess_abs_default_rapl_CounterOnly.csv", "rapl-sysfs", "AbsPower", "CounterOnly"),
               ("preprocess_dyn_default_min_acpi_KubeletOnly.csv", "acpi", "DynPower", "KubeletOnly"))
NX12_ROWS = 200
RAW_SPEC = {"processor": "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "cores": 96, "chips": 2,
            "memory": 377, "frequency": 3500}
# What Kepler 0.7.12 sends about the node it runs on (config.MachineSpec).
NODE_SPEC = {"vendor": "intel", "processor": "intel_xeon_platinum_8259cl", "cores": 96, "chips": 2,
             "memory": 377, "frequency": 3500, "threads_per_core": 2}
KEPLER_SOURCE = {"rapl-sysfs": "intel_rapl", "acpi": "acpi"}   # the names Kepler sends (types.go)
SYSTEM_FEATURES = ["cpu_architecture"]                          # Kepler appends these to its metrics
SYSTEM_VALUES = ["unknown"]
CURVE_TRAINERS = ("LogarithmicRegressionTrainer", "LogisticRegressionTrainer", "ExponentialRegressionTrainer")
LINEAR_TRAINERS = ("SGDRegressorTrainer", "LinearRegressionTrainer")
RELATIVE = 1e-9
ABSOLUTE = 1e-9   # watts: below this both sides are zero (ours clips negative power to 0)


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kepler_trainer.cli", *args, "-q"], capture_output=True,
                          text=True, timeout=timeout, check=False)


def train_all(work: Path) -> dict[str, Path]:
    """Both model folders, trained concurrently: {"dump2023": <models dir>, "nx12": <models dir>}."""
    spec = work / "spec.json"
    spec.write_text(json.dumps(RAW_SPEC))
    dump_models, nx12_models = work / "dump2023" / "models", work / "nx12" / "models"
    dump = subprocess.Popen(
        [sys.executable, "-m", "kepler_trainer.cli", "train", "-i", str(DUMP), "-p", "dump2023",
         "-e", "rapl-sysfs,acpi", "--abs-trainers", "all", "--dyn-trainers", "all", "--machine-spec", str(spec),
         "--model-path", str(dump_models), "--data-path", str(work / "data"), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for table, source, output_type, group in NX12_TABLES:
        done = cli("train_from_data", "-i", str(NX12 / table), "-p", "nx12", "-e", source, "-ot", output_type,
                   "-fg", group, "--trainers", "all", "--machine-spec", str(spec),
                   "--model-path", str(nx12_models), "--data-path", str(work / "data"))
        assert done.returncode == 0, done.stderr[-3000:]
    _, err = dump.communicate(timeout=900)
    assert dump.returncode == 0, err[-3000:]
    return {"dump2023": dump_models, "nx12": nx12_models}


@dataclass
class Model:
    """One published model folder and what our own `estimate` predicts with it on real rows."""

    pipeline_dir: Path
    folder: Path

    @cached_property
    def metadata(self) -> dict:
        return json.loads((self.folder / "metadata.json").read_text())

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def trainer(self) -> str:
        return self.metadata["trainer"]

    @property
    def features(self) -> list[str]:
        return list(self.metadata["features"])

    @property
    def source(self) -> str:
        return self.folder.parents[2].name

    @property
    def output_type(self) -> str:
        return self.folder.parents[1].name

    @property
    def group(self) -> str:
        return self.folder.parent.name

    @property
    def path(self) -> str:
        """`<pipeline>/<source>/<ot>/<fg>/<model>`, as the server's URLs name it."""
        return f"{self.pipeline_dir.name}/{self.folder.relative_to(self.pipeline_dir)}"

    @property
    def weight_json(self) -> Path:
        return self.folder / "weight.json"

    @property
    def beside_json(self) -> Path:
        return self.folder.with_suffix(".json")

    @property
    def kepler_features(self) -> list[str]:
        """The order Kepler holds its feature names in is its own: reversed here, so nothing depends on ours."""
        return self.features[::-1]

    @cached_property
    def expected(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Real feature rows (columns in `kepler_features` order) and our estimate per component."""
        if self.pipeline_dir.name == "nx12":
            return self._expected_from_table()
        return self._expected_from_dump()

    def _expected_from_dump(self):
        from kepler_trainer.estimate import ModelChoice, estimate
        from kepler_trainer.features import energy_source

        extracted = _extracted(self.source, energy_source)
        choice = ModelChoice(self.pipeline_dir, self.folder, self.source, self.output_type, self.group, self.name,
                             self.metadata["mae"])
        table, _ = estimate(extracted, choice)
        rows = extracted.features_only(self.features)
        assert len(rows) == len(table) > 0
        predicted = {c.removeprefix("predicted_").removesuffix("_power"): table[c].to_numpy(float)
                     for c in table.columns if c.startswith("predicted_")}
        return rows[self.kepler_features].to_numpy(float), predicted

    def _expected_from_table(self):
        from kepler_trainer.persist import LoadedModel

        table = next(t for t, s, o, g in NX12_TABLES if (s, o, g) == (self.source, self.output_type, self.group))
        data = pd.read_csv(NX12 / table)
        data = data.iloc[np.linspace(0, len(data) - 1, min(NX12_ROWS, len(data))).round().astype(int)]
        model = LoadedModel(self.folder)
        predicted = model.predict(data[model.features].to_numpy(float))
        return data[self.kepler_features].to_numpy(float), predicted


_EXTRACTED: dict[str, object] = {}


def _extracted(source: str, energy_source):
    if source not in _EXTRACTED:
        from kepler_trainer import promjson
        from kepler_trainer.extract import extract

        _EXTRACTED[source] = extract(promjson.load(DUMP), [energy_source(source)], require_power=False)
    return _EXTRACTED[source]


def models(models_dir: Path) -> list[Model]:
    found = []
    for pipeline_dir in sorted(p for p in models_dir.iterdir() if (p / "metadata.json").is_file()):
        for meta in sorted(pipeline_dir.glob("*/*/*/*/metadata.json")):
            found.append(Model(pipeline_dir, meta.parent))
    return found


@dataclass
class Tally:
    """Every comparison made, for the closing summary."""

    artefacts: set[str] = field(default_factory=set)
    cases: int = 0
    values: int = 0
    worst: float = 0.0
    worst_where: str = ""
    table: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)

    def record(self, version: str, path: str, family: str, outcome: str) -> None:
        self.table.setdefault((version, path, family), set()).add(outcome)


TALLY = Tally()


def family(trainer: str) -> str:
    if trainer in LINEAR_TRAINERS:
        return "linear"
    if trainer in CURVE_TRAINERS:
        return "curve fit"
    return "other (trees, kernels, neighbours, polynomial)"


def compare(case_id: str, kepler: dict, expected: dict[str, np.ndarray]) -> list[str]:
    """Problems with one Kepler result against our estimate (empty: equal within 1e-9 relative)."""
    if kepler.get("panic"):
        return [f"{case_id}: Kepler PANICKED: {kepler['panic'].splitlines()[0]}"]
    if kepler.get("error"):
        return [f"{case_id}: Kepler error: {kepler['error'][:300]}"]
    powers = kepler.get("powers") or {}
    if set(powers) != set(expected):
        return [f"{case_id}: Kepler computed components {sorted(powers)}, we estimate {sorted(expected)}"]
    problems = []
    TALLY.cases += 1
    for component, ours in expected.items():
        theirs = np.clip(np.asarray(powers[component], dtype=float), 0.0, None)  # ours clips at 0 W too
        if theirs.shape != ours.shape:
            problems.append(f"{case_id}: {component}: {theirs.size} values from Kepler, {ours.size} from us")
            continue
        diff = np.abs(theirs - ours)
        scale = np.maximum(np.abs(theirs), np.abs(ours))
        relative = np.where(scale > ABSOLUTE, diff / np.where(scale > 0, scale, 1.0), 0.0)
        TALLY.values += int(ours.size)
        worst = float(relative.max(initial=0.0))
        if worst > TALLY.worst:
            TALLY.worst, TALLY.worst_where = worst, f"{case_id} {component}"
        bad = ~((diff <= ABSOLUTE) | (relative <= RELATIVE)) | ~np.isfinite(theirs)
        if bad.any():
            i = int(np.argmax(bad))
            problems.append(f"{case_id}: {component}: {int(bad.sum())}/{ours.size} rows differ, e.g. row {i}: "
                            f"Kepler {theirs[i]!r}, ours {ours[i]!r}")
    return problems


def kepler_request(version: str, model: Model, trainer: str) -> dict:
    """The `ModelRequest` body `version`'s getWeightFromServer sends (regressor.go)."""
    body = {"metrics": model.kepler_features + SYSTEM_FEATURES, "output_type": model.output_type,
            "source": KEPLER_SOURCE[model.source], "weight": True, "trainer_name": trainer, "filter": ""}
    if version == "v0.7.11":
        return {**body, "node_type": 1}   # its defaultNodeType
    return {**body, "node_type": 0, "machine_spec": NODE_SPEC}  # 0.7.12 leaves node_type zero


def rows_for(asked: Model, chosen: Model) -> list[list[float]]:
    """The chosen model's rows, widened to the asked feature list (the extra features are not read)."""
    rows, _ = chosen.expected
    position = {f: i for i, f in enumerate(chosen.kepler_features)}
    return [[row[position[f]] if f in position else 0.0 for f in asked.kepler_features] for row in rows.tolist()]
