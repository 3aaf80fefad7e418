"""The fast inference form of a version: its scikit-learn pipeline as ONNX, kept only if it agrees.

At registration the pipeline is converted with skl2onnx and run with onnxruntime on the training
data; the ONNX form is kept only if every predicted label matches and no class probability differs
from scikit-learn's by more than ONNX_MAX_ABS_DIFF. Otherwise serving uses the pipeline itself.
"""

import copy
import logging

import numpy as np

logger = logging.getLogger(__name__)

# Inputs are one [n, 1] tensor per feature, named as the feature: numbers as float32, text as strings.
# A missing category is sent as "" (the converted imputer's missing value), a missing number as NaN.
MISSING_CATEGORY = ""


def onnx_session(model_bytes):
    """An onnxruntime session on one thread (one per worker process; more threads only contend)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def feeds_from_frame(frame, features):
    """The onnxruntime inputs for a DataFrame of features (used to verify the conversion)."""
    feeds = {}
    for feature in features:
        column = frame[feature["name"]]
        if feature["dtype"] == "categorical":
            values = np.array([MISSING_CATEGORY if v is None or v != v else str(v) for v in column], dtype=object)
        else:
            values = column.to_numpy(dtype="float32")
        feeds[feature["name"]] = values.reshape(-1, 1)
    return feeds


def _convertible_copy(pipeline):
    """A copy whose categorical imputers treat "" as missing: skl2onnx converts string imputers only so."""
    converted = copy.deepcopy(pipeline)
    preprocess = converted.named_steps.get("preprocess")
    for name, transformer, _ in getattr(preprocess, "transformers_", []):
        if name == "categorical" and hasattr(transformer, "named_steps") and "impute" in transformer.named_steps:
            transformer.named_steps["impute"].missing_values = MISSING_CATEGORY
    return converted


def onnx_convert(*, pipeline, features, frame, tolerance):
    """(onnx bytes or None, max abs difference of probabilities or None, a note saying what happened)."""
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType

        converted = _convertible_copy(pipeline)
        initial_types = [
            (f["name"], StringTensorType([None, 1]) if f["dtype"] == "categorical" else FloatTensorType([None, 1]))
            for f in features
        ]
        model = to_onnx(
            converted,
            initial_types=initial_types,
            target_opset={"": 17, "ai.onnx.ml": 3},
            options={id(converted.steps[-1][1]): {"zipmap": False}},
        )
        model_bytes = model.SerializeToString()
        labels, probabilities = onnx_session(model_bytes).run(None, feeds_from_frame(frame, features))
    except Exception as exc:  # an estimator or option skl2onnx cannot convert: serve the pipeline instead
        logger.info("ONNX conversion failed: %s", exc)
        return None, None, f"ONNX conversion failed ({type(exc).__name__}: {str(exc)[:300]}); serving scikit-learn"
    expected = pipeline.predict_proba(frame)
    difference = float(np.abs(np.asarray(probabilities, dtype="float64") - expected).max())
    same_labels = [str(label) for label in labels] == [str(label) for label in pipeline.predict(frame)]
    if not same_labels or difference > tolerance:
        return (
            None,
            difference,
            f"ONNX disagrees with scikit-learn (max probability difference {difference:.2e}, "
            f"labels {'match' if same_labels else 'differ'}); serving scikit-learn",
        )
    return model_bytes, difference, f"ONNX matches scikit-learn on {len(frame)} rows (max difference {difference:.2e})"
