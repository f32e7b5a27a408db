"""Inference with causal lineage (extra ``onnx``): every prediction explainable and replayable.

* :class:`OnnxModel`, :class:`CallableModel`, the :class:`Model` protocol and
  :class:`ModelIdentity` (:mod:`.models`);
* :class:`Predictor`: reads features and flags from one consistent view, runs the model,
  returns a :class:`Prediction` with its :class:`LineageRecord` (:mod:`.predictor`);
* :class:`LineageLog`/:class:`LineageReader`: compact, batched records on any log
  (:mod:`.lineage_log`, format in :mod:`.record`);
* :class:`PredictionCache` (:mod:`.cache`);

and, in the modules that follow, the fold that rebuilds state at a context
(:mod:`.history`, :mod:`.fold`), :func:`explain`, ``as_of`` and point-in-time export,
and decision divergence.
"""

from .archive import ModelArchive
from .asof import PointInTime, Timeline, as_of, point_in_time
from .cache import CacheStats, PredictionCache
from .digests import input_digest, output_digest
from .divergence import Divergence, DivergenceStats, mirror
from .explain import Explainer, Explanation
from .fold import EventRef, Fold
from .history import Checkpoint, CheckpointStore, EventHistory, Retention
from .lineage import Lineage, explain, open_explainer
from .lineage_log import LineageLog, LineageReader, LineageStats, open_lineage_log
from .models import CallableModel, Model, ModelIdentity, OnnxModel, Outputs
from .predictor import Prediction, Predictor
from .record import LineageRecord, PredictorSpec

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "Divergence",
    "DivergenceStats",
    "EventHistory",
    "EventRef",
    "Explainer",
    "Explanation",
    "Fold",
    "Lineage",
    "ModelArchive",
    "PointInTime",
    "Retention",
    "Timeline",
    "as_of",
    "explain",
    "mirror",
    "open_explainer",
    "point_in_time",
    "CacheStats",
    "CallableModel",
    "LineageLog",
    "LineageReader",
    "LineageRecord",
    "LineageStats",
    "Model",
    "ModelIdentity",
    "OnnxModel",
    "Outputs",
    "Prediction",
    "PredictionCache",
    "Predictor",
    "PredictorSpec",
    "input_digest",
    "open_lineage_log",
    "output_digest",
]
