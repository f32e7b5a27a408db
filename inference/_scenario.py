"""The breast-cancer scenario shared by the acceptance test and the benchmark.

A scikit-learn model trained on ``load_breast_cancer`` (it ships with scikit-learn) and
converted with skl2onnx at run time (nothing is downloaded); its 30 features as LWW
features of a schema, plus one flag. Needs scikit-learn and skl2onnx (the ``dev`` extra).
"""

from __future__ import annotations

import re
from typing import Any

from crdtsync.schema import Feature, Flag, Schema
from crdtsync.types.flags import EnableWinsFlag
from crdtsync.types.registers import LWWRegister

from .models import OnnxModel

__all__ = ["dataset", "feature_names", "lr_model", "mlp_model", "schema"]


def dataset() -> tuple[Any, Any, list[str]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [re.sub(r"[^A-Za-z0-9_]", "_", n) for n in data.feature_names]
    return data.data, data.target, names


def feature_names() -> list[str]:
    return dataset()[2]


def schema(names: list[str], flag: str = "model_enabled") -> Schema:
    return Schema([*(Feature(n, LWWRegister) for n in names), Flag(flag, EnableWinsFlag)])


def _convert(est: Any, X: Any) -> bytes:
    import numpy as np
    from skl2onnx import to_onnx

    onx = to_onnx(est, X[:1].astype(np.float32), options={id(est.steps[-1][1]): {"zipmap": False}},
                  target_opset=17)
    return onx.SerializeToString()  # type: ignore[no-any-return]


def lr_model() -> OnnxModel:
    """StandardScaler + LogisticRegression, as ONNX."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, names = dataset()
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    return OnnxModel(_convert(est, X), name="breast-cancer-lr", version="1", features=names)


def mlp_model(hidden: tuple[int, ...] = (256, 256, 128)) -> OnnxModel:
    """StandardScaler + a larger MLP, as ONNX."""
    import warnings

    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, names = dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make_pipeline(StandardScaler(), MLPClassifier(hidden, max_iter=50, random_state=0)).fit(X, y)
    return OnnxModel(_convert(est, X), name="breast-cancer-mlp", version="1", features=names)
