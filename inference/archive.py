"""Models kept next to the lineage log, so a decision can be re-run without its caller.

:class:`ModelArchive` stores an :class:`~crdtsync.inference.OnnxModel`'s bytes under
their sha256 (``<sha256>.onnx``) with a manifest of how it was built (``<sha256>.json``:
name, version, input mapping, outputs, threads, session options, providers), and rebuilds
it by identity. A rebuilt model whose identity differs from the recorded one (another
onnxruntime build, other settings) is refused by the explainer, never silently used.
A :class:`~crdtsync.inference.CallableModel` cannot be archived: give it to the explainer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .models import Model, ModelIdentity, OnnxModel

__all__ = ["ModelArchive"]


class ModelArchive:
    """ONNX models by sha256 in a directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, model: Model) -> bool:
        """Archive ``model`` if it is an ONNX model (returns whether it was archived)."""
        if not isinstance(model, OnnxModel):
            return False
        sha = model.identity.sha256
        blob = self.dir / f"{sha}.onnx"
        if not blob.exists():
            tmp = blob.with_suffix(".tmp")
            tmp.write_bytes(model.model_bytes)
            os.replace(tmp, blob)
        manifest = {
            "name": model.name, "version": model.version, "inputs": {p.name: [model.features[i] for i in p.columns]
                                                                      for p in model._plans},
            "outputs": model._out_names, "intra_op_threads": model.intra_op_threads,
            "inter_op_threads": model.inter_op_threads, "session_options": model.session_options,
            "providers": list(model.providers),
        }
        (self.dir / f"{sha}.json").write_text(json.dumps(manifest, sort_keys=True, default=str))
        return True

    def load(self, identity: ModelIdentity) -> OnnxModel | None:
        """The archived model with this sha256 (``None`` if not archived)."""
        blob = self.dir / f"{identity.sha256}.onnx"
        man = self.dir / f"{identity.sha256}.json"
        if not (blob.exists() and man.exists()):
            return None
        m = json.loads(man.read_text())
        return OnnxModel(blob.read_bytes(), name=m["name"], version=m["version"], inputs=m["inputs"],
                         outputs=m["outputs"], intra_op_threads=m["intra_op_threads"],
                         inter_op_threads=m["inter_op_threads"], session_options=m["session_options"],
                         providers=m["providers"])
