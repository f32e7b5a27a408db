"""Bridges to outside systems (Kafka, OpenFeature, OpenLineage); each needs its extra."""
