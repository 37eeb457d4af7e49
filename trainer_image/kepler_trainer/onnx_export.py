"""ONNX export of a trained PowerModel: one graph, the scaler inside, one output per power zone.

The graph takes `features` (rows x inputs, in the model's feature order) and returns one tensor per zone
(`<zone>`, rows x 1, watts), computing what `PowerModel.predict_components` computes: the scaler, the
regressor, the DynPower offset, and the clip at 0 W. A model is exportable only if onnxruntime's answer
equals the native one on the held-out rows within `RELATIVE_TOLERANCE`, relative to the zone's absolute
power (for a DynPower model, its dynamic power plus the idle offset it subtracts: the magnitude the
regressor itself computes, so float32 rounding of a 90 W prediction is not judged against a 0.1 W
remainder), with `ABSOLUTE_FLOOR` watts as the smallest denominator; otherwise the reason is recorded.
Inputs are float64 where every converter and onnxruntime kernel supports it (linear, k-neighbours),
float32 otherwise (trees, kernels: what their ONNX operators compute in).
"""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pandas as pd

from .trainers import PowerModel

RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_FLOOR = 1e-3   # watts
INPUT = "features"
OPSET = {"": 17, "ai.onnx.ml": 3}
_registered = False


class NotExportable(Exception):
    """Why a model has no ONNX form."""


def _register_xgboost() -> None:
    global _registered
    if _registered:
        return
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from skl2onnx import update_registered_converter
        from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes
        from xgboost import XGBRegressor
    except ImportError:
        return
    update_registered_converter(XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                convert_xgboost)
    _registered = True


def _xgboost_base_score(estimator, onnx_model) -> None:
    """onnxmltools reads XGBoost >= 2's estimated base score as 0.5: write the booster's own value in."""
    regressor = estimator.named_steps["model"] if hasattr(estimator, "named_steps") else estimator
    if type(regressor).__name__ != "XGBRegressor":
        return
    config = json.loads(regressor.get_booster().save_config())
    base = float(str(config["learner"]["learner_model_param"]["base_score"]).strip("[]"))
    for node in onnx_model.graph.node:
        if node.op_type == "TreeEnsembleRegressor":
            for attribute in node.attribute:
                if attribute.name == "base_values":
                    del attribute.floats[:]
                    attribute.floats.append(base)


def _component_graph(pipeline, n_features: int, double: bool):
    """The scaler and regressor of one zone (or a regressor alone) as an ONNX model with input `features`."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    _register_xgboost()
    tensor = DoubleTensorType if double else FloatTensorType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = convert_sklearn(pipeline, initial_types=[(INPUT, tensor([None, n_features]))], target_opset=OPSET)
        except Exception as exc:  # a converter's refusal: the reason is the point
            raise NotExportable(f"no ONNX converter: {str(exc).splitlines()[0][:200]}") from None
    _xgboost_base_score(pipeline, model)
    return model


def _constant_graph(value: float, n_features: int, double: bool):
    from onnx import TensorProto, helper, numpy_helper

    dtype = np.float64 if double else np.float32
    elem = TensorProto.DOUBLE if double else TensorProto.FLOAT
    nodes = [helper.make_node("MatMul", [INPUT, "zeros"], ["product"]),
             helper.make_node("Add", ["product", "constant"], ["variable"])]
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info(INPUT, elem, [None, n_features])],
                              [helper.make_tensor_value_info("variable", elem, [None, 1])],
                              [numpy_helper.from_array(np.zeros((n_features, 1), dtype), "zeros"),
                               numpy_helper.from_array(np.array([value], dtype), "constant")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET[""])])


MODES = ("float64", "scaled-float32", "float32")
"""float64 throughout; the scaler in float64 and the regressor in float32 (what scikit-learn's and
XGBoost's trees do: they cast their input to float32, so a row on a split threshold goes the same way);
float32 throughout."""


_FLOAT32_TREES = ("GradientBoostingRegressor", "ExtraTreesRegressor", "RandomForestRegressor", "DecisionTreeRegressor",
                  "XGBRegressor")


def _modes(model: PowerModel) -> tuple[str, ...]:
    """The arithmetic to try first is the one the native model uses: trees compare float32 inputs."""
    trees = any(type(p[-1]).__name__ in _FLOAT32_TREES for z, p in model.models_.items() if not model.is_constant(z))
    return ("scaled-float32", "float64", "float32") if trees else MODES


def build(model: PowerModel, mode: str):
    """One ONNX model with an output per zone."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    n = len(model.features_)
    double = mode != "float32"
    elem, dtype = (TensorProto.DOUBLE, np.float64) if double else (TensorProto.FLOAT, np.float32)
    nodes, initializers, outputs, opsets = [], [], [], {}
    for zone, pipeline in model.models_.items():
        split = mode == "scaled-float32" and not model.is_constant(zone)
        if model.is_constant(zone):
            part = _constant_graph(float(pipeline[-1].constant_.ravel()[0]), n, double)
        elif split:
            part = _component_graph(pipeline[-1], n, False)
        else:
            part = _component_graph(pipeline, n, double)
        out_name = part.graph.output[0].name
        part = compose.add_prefix(part, f"{zone}__", rename_inputs=split)
        if split:  # features / scale in float64, then float32 into the regressor
            scale = pipeline.named_steps["scale"].scale_
            initializers.append(numpy_helper.from_array(np.asarray(scale, np.float64), f"kmo_{zone}_scale"))
            nodes += [helper.make_node("Div", [INPUT, f"kmo_{zone}_scale"], [f"kmo_{zone}_scaled"]),
                      helper.make_node("Cast", [f"kmo_{zone}_scaled"], [f"{zone}__{INPUT}"], to=TensorProto.FLOAT)]
        nodes.extend(part.graph.node)
        initializers.extend(part.graph.initializer)
        for o in part.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
        shifted = f"kmo_{zone}_shifted"
        initializers.append(numpy_helper.from_array(np.array([model.offsets_[zone]], dtype), f"kmo_{zone}_offset"))
        flat = f"kmo_{zone}_flat"
        initializers.append(numpy_helper.from_array(np.array([-1, 1], np.int64), f"kmo_{zone}_shape"))
        cast = f"kmo_{zone}_cast"  # a float32 regressor inside a float64 graph (XGBoost)
        nodes += [helper.make_node("Cast", [f"{zone}__{out_name}"], [cast], to=elem),
                  helper.make_node("Reshape", [cast, f"kmo_{zone}_shape"], [flat]),
                  helper.make_node("Sub", [flat, f"kmo_{zone}_offset"], [shifted]),
                  helper.make_node("Relu", [shifted], [zone])]  # the clip at 0 W
        outputs.append(helper.make_tensor_value_info(zone, elem, [None, 1]))
    graph = helper.make_graph(nodes, "kepler_power_model", [helper.make_tensor_value_info(INPUT, elem, [None, n])],
                              outputs, initializers)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                               producer_name="kepler-model-operator")
    merged.ir_version = min(merged.ir_version, 9)  # onnxruntime reads up to this IR version
    onnx.checker.check_model(merged)
    return merged


def session(onnx_bytes: bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def predict(sess, x: np.ndarray) -> dict[str, np.ndarray]:
    """Zone -> watts from an onnxruntime session of an exported model."""
    spec = sess.get_inputs()[0]
    dtype = np.float64 if spec.type == "tensor(double)" else np.float32
    names = [o.name for o in sess.get_outputs()]
    outputs = sess.run(names, {spec.name: x.astype(dtype)})
    return {name: out.ravel().astype(float) for name, out in zip(names, outputs, strict=True)}


def largest_relative_error(native: pd.DataFrame, exported: dict[str, np.ndarray],
                           offsets: dict[str, float] | None = None) -> float:
    worst = 0.0
    for column in native.columns:
        zone = column.removesuffix("_power")
        want = native[column].to_numpy(float)
        scale = np.abs(want) + abs((offsets or {}).get(zone, 0.0))
        error = np.abs(exported[zone] - want) / np.maximum(scale, ABSOLUTE_FLOOR)
        worst = max(worst, float(error.max(initial=0.0)))
    return worst


def export(model: PowerModel, check_rows: pd.DataFrame) -> tuple[bytes | None, dict]:
    """(ONNX bytes or None, the check's report): exportable only if onnxruntime agrees on `check_rows`."""
    native = model.predict_components(check_rows)
    x = check_rows[model.features_].to_numpy(float)
    reasons = []
    for mode in _modes(model):
        try:
            data = build(model, mode).SerializeToString()
            worst = largest_relative_error(native, predict(session(data), x), model.offsets_)
        except NotExportable as exc:
            return None, {"exportable": False, "reason": str(exc)}
        except Exception as exc:  # onnxruntime lacks a kernel for this input type: try the other
            reasons.append(f"{mode}: {str(exc).splitlines()[0][:200]}")
            continue
        if worst <= RELATIVE_TOLERANCE:
            return data, {"exportable": True, "input_type": "float32" if mode == "float32" else "float64",
                          "arithmetic": mode,
                          "max_relative_error": worst, "rows_checked": len(x),
                          "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        reasons.append(f"{mode}: onnxruntime differs from the native model by "
                       f"{worst:.2e} relative (tolerance {RELATIVE_TOLERANCE:g}) on {len(x)} held-out rows")
    return None, {"exportable": False, "reason": "; ".join(reasons)}
