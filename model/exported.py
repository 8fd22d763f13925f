"""An exported artifact evaluated offline, as the service answers: the contract's ensemble math
(``service.contract.ensemble``) on the graph's member log-likelihoods from onnxruntime, one thread.

Torch-free: export estimates log Z with it from the bytes it is about to write; the study opens
the artifact directories it exported.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from service.contract import artifact
from service.contract.ensemble import Ensemble
from service.contract.graph_nets import member_nets_from_graph
from service.contract.sampler import MemberNet


class ExportedMembers(Ensemble):
    """The exported mixture: exact draws from its nets' sampler (the service's own) and the
    graph's member log-likelihoods on onnxruntime, one thread, as the service's engine computes
    them."""

    def __init__(self, manifest: artifact.Manifest, model_bytes: bytes, nets: list[MemberNet]):
        super().__init__(nets, manifest.mixture_weights)
        self.manifest = manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            model_bytes, options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def open(cls, directory: Path) -> "ExportedMembers":
        """An artifact directory, its graph checked against the manifest as the service checks it
        at load (the float64 parity was checked when it was exported)."""
        manifest = artifact.read_manifest(directory)
        model = onnx.load(str(artifact.verify_onnx_file(directory, manifest)))
        return cls(manifest, model.SerializeToString(), member_nets_from_graph(model, manifest))

    def forward(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_prob, logits = self.session.run(
            [artifact.OUTPUT_LOG_PROB, artifact.OUTPUT_LOGITS], {artifact.INPUT_X: rows}
        )
        return log_prob.astype(np.float64), logits

    def member_log_probs(self, rows: np.ndarray) -> np.ndarray:
        (log_prob,) = self.session.run([artifact.OUTPUT_LOG_PROB], {artifact.INPUT_X: rows})
        return log_prob.astype(np.float64)
