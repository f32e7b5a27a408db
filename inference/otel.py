"""OpenTelemetry spans for predictions: on when a tracer provider is configured, free otherwise.

:func:`prediction_tracer` returns ``None`` when the OpenTelemetry API is not importable or
no SDK tracer provider is installed (the API's default proxy provider records nothing),
so a predictor without tracing pays one ``is None`` test per batch. With a provider, each
prediction gets a span ``crdtsync.predict`` carrying the prediction id, model name,
version and sha256, the entity key and a digest of the read's context, and one
``feature_flag.evaluation`` event per flag read (OpenTelemetry's semantic conventions:
``feature_flag.key``, ``feature_flag.result.value``, ``feature_flag.provider.name``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from .record import LineageRecord

__all__ = ["prediction_tracer", "PredictionTracer"]


class PredictionTracer:
    """Emits one span per prediction through an OpenTelemetry tracer."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    def emit(self, record: LineageRecord, flag_values: dict[str, Any]) -> None:
        ctx_digest = hashlib.blake2b(record.context.encode(), digest_size=8).hexdigest()
        span = self._tracer.start_span("crdtsync.predict", attributes={
            "crdtsync.prediction_id": record.prediction_id,
            "crdtsync.replica": record.replica,
            "crdtsync.entity_key": record.key,
            "crdtsync.model.name": record.model.name,
            "crdtsync.model.version": record.model.version,
            "crdtsync.model.sha256": record.model.sha256,
            "crdtsync.context_digest": ctx_digest,
            "crdtsync.input_digest": record.input_digest.hex(),
            "crdtsync.output_digest": record.output_digest.hex(),
        })
        try:
            for name, value in flag_values.items():
                span.add_event("feature_flag.evaluation", {
                    "feature_flag.key": name,
                    "feature_flag.result.value": str(value),
                    "feature_flag.provider.name": "crdtsync",
                    "feature_flag.context.id": record.key,
                })
        finally:
            span.end()


def prediction_tracer(enabled: Any = None) -> PredictionTracer | None:
    """A tracer when ``enabled`` (``None``: when an SDK tracer provider is configured; a
    ``TracerProvider``: that provider's tracer)."""
    if enabled is False:
        return None
    if enabled is not None and enabled is not True and hasattr(enabled, "get_tracer"):
        return PredictionTracer(enabled.get_tracer("crdtsync.inference"))
    try:
        from opentelemetry import trace
    except ImportError:
        if enabled:
            raise ImportError("tracing needs the otel extra: pip install 'crdtsync[otel]'") from None
        return None
    provider = trace.get_tracer_provider()
    if enabled is None and type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
        return None
    return PredictionTracer(trace.get_tracer("crdtsync.inference"))
