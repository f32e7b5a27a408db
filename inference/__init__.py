"""Model adapters, lineage records, explain and replay (needs the ``onnx`` extra for ONNX)."""
