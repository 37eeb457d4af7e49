"""A trained model on disk: its folder, its weight file, and loading it back without pickle.

Folder `<Trainer>_<node_type>/`: `metadata.json`, `<model_name>.json` (component index: model file and
features per component), one file per component (`.skops` for scikit-learn and curve fits, XGBoost's
own `.json` for XGBoost), and `weight.json` for the models Kepler's Go estimator can run itself.
scikit-learn models are stored with skops, never pickle, and loaded only when every type they hold
is on a short allow-list, so a tampered file cannot run code.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import orjson

from kepler_contract import layout

from .errors import InputError
from .trainers import PowerModel, TrainerSpec

TRUSTED_TYPES = frozenset({
    "kepler_trainer.trainers.CurveFitRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
})


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False, default=_jsonable))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- weight.json ----------------------------------------------------------------------------------

# Parameters of a curve that is flat at its last parameter (the constant term): zero amplitude, and a
# zero rate where the rate multiplies x, so Kepler's arithmetic never meets inf * 0.
_FLAT_CURVES = {"logarithmic": [0.0, 1.0], "logistic": [0.0, 0.0, 0.0], "exponential": [0.0, 0.0]}


def kepler_weights(model: PowerModel) -> tuple[bool, str]:
    """Whether Kepler's own regressor (0.7.11, 0.7.12) computes this model's power from weight.json,
    and why (docs/contracts.md, "Kepler compatibility")."""
    return kepler_weights_of(model.spec, len(model.features_))


def kepler_weights_of(spec: TrainerSpec, n_features: int) -> tuple[bool, str]:
    kind = spec.weight_kind
    if kind is None:
        return False, (f"Kepler's regressor has no form for a {spec.model_class} {spec.name} model; "
                       "Kepler reaches it through the estimator sidecar")
    if kind == "curvefit" and n_features != 1:
        return False, (f"a curve fit over {n_features} features: Kepler evaluates a curve fit on the "
                       "first of its own feature names, an order it does not fix; the sidecar evaluates it")
    return True, "linear weights" if kind == "linear" else "a one-feature curve fit"


def weight_document(model: PowerModel) -> dict | None:
    """The weight file Kepler's estimator reads (its pkg/model/estimator/local/regressor), or None when
    Kepler cannot run the model from weights (`kepler_weights`).

    Linear: prediction = Bias_Weight + sum(weight * x / scale). A constant component is a bias alone
    in a linear model, and a flat curve in a curve fit: Kepler picks one predictor kind for every
    component of a model (by its trainer), and a curve predictor rejects linear weights.
    """
    if not kepler_weights(model)[0]:
        return None
    kind = model.spec.weight_kind
    document = {}
    for component, pipeline in model.models_.items():
        scale = pipeline.named_steps["scale"].scale_
        regressor = pipeline.named_steps["model"]
        numerical = {f: {"scale": float(s)} for f, s in zip(model.features_, scale, strict=False)}
        weights: dict = {"Categorical_Variables": {}, "Numerical_Variables": numerical}
        offset = model.offsets_[component]
        if model.is_constant(component):
            constant = float(regressor.constant_.ravel()[0]) - offset
            if kind == "linear":
                weights["Bias_Weight"] = constant
                for f in numerical:
                    numerical[f]["weight"] = 0.0
            else:
                weights["CurveFit_Weights"] = [*_FLAT_CURVES[model.spec.curve], constant]
        elif kind == "linear":
            weights["Bias_Weight"] = float(np.ravel(regressor.intercept_)[0]) - offset
            for f, w in zip(model.features_, regressor.coef_, strict=False):
                numerical[f]["weight"] = float(w)
        else:
            params = [float(p) for p in regressor.params_]
            params[-1] -= offset  # every curve's last parameter is its constant term
            weights["CurveFit_Weights"] = params
        document[component] = {"All_Weights": weights}
    return document


def predict_from_weights(document: dict, rows: list[dict[str, float]]) -> dict[str, list[float]]:
    """Predict as Kepler's Go estimator does from a linear weight file (used to check the export)."""
    out: dict[str, list[float]] = {}
    for component, body in document.items():
        if not isinstance(body, dict) or "All_Weights" not in body:
            continue
        w = body["All_Weights"]
        values = []
        for row in rows:
            total = w["Bias_Weight"]
            for name, var in w["Numerical_Variables"].items():
                if var["scale"]:
                    total += var["weight"] * row[name] / var["scale"]
            values.append(total)
        out[component] = values
    return out


# -- model folders ----------------------------------------------------------------------------------

def save_model(folder: Path, model: PowerModel, metadata: dict, same_regressors: Path | None = None) -> None:
    """Write the folder, then the flat zip and the weight file beside it.

    `same_regressors`: a saved folder of a model sharing these fitted regressors (see
    `PowerModel.shifted`); its component files are linked instead of serialised again.
    """
    folder.mkdir(parents=True)
    name = folder.name
    index = {}
    for component, pipeline in model.models_.items():
        regressor = pipeline.named_steps["model"]
        xgboost = model.spec.model_class == "xgboost" and not model.is_constant(component)
        model_file = f"{component}.json" if xgboost else f"{component}.skops"
        entry = {"scale": pipeline.named_steps["scale"].scale_.tolist()} if xgboost else {}
        if same_regressors is not None:
            _link_or_copy(same_regressors / model_file, folder / model_file)
        elif xgboost:
            regressor.save_model(str(folder / model_file))
        else:
            (folder / model_file).write_bytes(skops_bytes(pipeline))
        if model.offsets_[component]:
            entry["offset"] = model.offsets_[component]
        index[component] = {"model_file": model_file, "features": model.features_, "fe_files": [], **entry}
    write_json(folder / layout.model_file(name), index)
    weights = weight_document(model)
    if weights is not None:
        write_json(folder / layout.WEIGHTS, weights)
    loadable, reason = kepler_weights(model)
    write_json(folder / layout.METADATA, {**metadata, "weight": weights is not None, "kepler_weights": loadable,
                                          "kepler_weights_reason": reason})
    zip_folder(folder, folder.parent / layout.model_archive(name))
    if weights is not None:
        # Kepler 0.7.12's form (as its own bundled weight files): it reads the trainer from model_name,
        # which 0.7.11 cannot decode; weight.json in the folder is the plain component map for 0.7.11.
        write_json(folder.parent / layout.model_file(name), {"model_name": name, **_machine_spec(metadata), **weights})


def _machine_spec(metadata: dict) -> dict:
    """The model's machine spec as Kepler 0.7.12's config.MachineSpec decodes it (empty when unknown)."""
    from .machine import go_spec

    spec = go_spec(metadata.get("machine_spec") or {})
    return {"machine_spec": spec} if spec else {}


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def skops_bytes(obj) -> bytes:
    """`skops.io.dumps` with its schema encoded by orjson.

    skops indents its schema.json, which sends it through the pure-Python JSON encoder: for a
    100-tree gradient boosting model that is most of a training run. The archive is the same format.
    """
    import skops
    from skops.io._utils import SaveContext, get_state  # skops takes seconds to import: only when saving

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        context = SaveContext(zip_file=archive)
        state = get_state(obj, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = skops.__version__
        archive.writestr("schema.json", orjson.dumps(state))
    return buffer.getvalue()


def zip_folder(folder: Path, target: Path, exclude: frozenset[str] = frozenset()) -> None:
    """A deterministic zip (sorted names, fixed timestamps) of the folder's regular files, paths kept.

    Members that are archives already (model zips inside a pipeline zip) are stored, not deflated again.
    Symlinks and special files are left out (a planted link must not pull outside files into the zip);
    so are the relative paths in `exclude`.
    """
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for rel in sorted(set(regular_files(folder)) - exclude, key=lambda r: r.split("/")):  # as Path order
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if rel.endswith(".zip") else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, read_regular(folder / rel), compresslevel=1)  # a ZipInfo ignores the archive's level


# -- trees that may hold planted links ----------------------------------------------------------------

def regular_files(folder: Path) -> list[str]:
    """Relative paths of the regular files under `folder`, never through a symlink."""
    found = []
    for top, dirs, files in os.walk(folder):  # os.walk does not descend into symlinked folders
        base = Path(top)
        dirs[:] = [d for d in dirs if not (base / d).is_symlink()]
        found.extend(str((base / f).relative_to(folder)) for f in files
                     if stat.S_ISREG(os.lstat(base / f).st_mode))
    return found


def read_regular(path: Path) -> bytes:
    """A file's bytes, refusing (OSError) a symlink or a special file swapped in since it was listed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return handle.read()


def copy_tree(source: Path, target: Path) -> int:
    """Copy the regular files and folders of `source` to `target`; symlinks and special files are left
    behind (returns how many). Used to carry model groups over from the previous pipeline version."""
    left = 0
    target.mkdir(parents=True)
    with os.scandir(source) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                left += copy_tree(Path(entry.path), target / entry.name)
            elif entry.is_file(follow_symlinks=False):
                (target / entry.name).write_bytes(read_regular(Path(entry.path)))
            else:
                left += 1
    return left


class LoadedModel:
    """A model read back from its folder: enough to predict every component."""

    def __init__(self, folder: Path):
        self.folder = folder
        try:
            self.metadata = json.loads((folder / layout.METADATA).read_text())
            index = json.loads((folder / self.metadata["model_file"]).read_text())
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{folder}: not a model folder ({exc})") from None
        self.features: list[str] = list(self.metadata["features"])
        self.components: dict[str, object] = {}
        self.offsets: dict[str, float] = {}
        for component, entry in index.items():
            self.components[component] = self._load_component(folder, entry)
            self.offsets[component] = float(entry.get("offset", 0.0))

    def _load_component(self, folder: Path, entry: dict):
        file = _inside(folder, entry["model_file"])
        if file.suffix == ".skops":
            import skops.io as sio

            untrusted = set(sio.get_untrusted_types(file=file))
            unknown = untrusted - TRUSTED_TYPES
            if unknown:
                raise InputError(f"{file}: refusing to load unexpected types {sorted(unknown)}")
            return sio.load(file, trusted=sorted(untrusted))
        from xgboost import XGBRegressor  # only XGBoost models have .json component files

        regressor = XGBRegressor()
        regressor.load_model(str(file))
        return _Scaled(np.asarray(entry["scale"], dtype=float), regressor)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {c: np.clip(m.predict(x) - self.offsets[c], 0.0, None) for c, m in self.components.items()}


class _Scaled:
    """A regressor behind a fixed MaxAbs scale (XGBoost models, whose scaler lives in the index)."""

    def __init__(self, scale: np.ndarray, regressor):
        self.scale = np.where(scale == 0, 1.0, scale)
        self.regressor = regressor

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.regressor.predict(x / self.scale)


def _inside(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise InputError(f"{folder}: model file {name!r} points outside the model folder")
    return path
