"""The exported graph's members on onnxruntime: the one way the trainer (export, the study) and the
service run it, so that an offline figure is the served one."""

import numpy as np
import onnxruntime as ort

from service.contract import artifact
from service.contract.ensemble import Ensemble
from service.contract.graph_nets import units_output
from service.contract.sampler import MemberNet


def cpu_session(model_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle intra-op threads would spin on the cores the event loop needs between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


class OnnxMembers(Ensemble):
    """The ensemble's math on the graph's member log-likelihoods and logits."""

    def __init__(
        self, manifest: artifact.Manifest, session: ort.InferenceSession, nets: list[MemberNet]
    ):
        super().__init__(nets, manifest.mixture_weights, manifest.schema())
        self.manifest = manifest
        self.session = session
        self.units_output = units_output(manifest)

    def forward(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows [B, D] -> member log-likelihoods [B, K] float64 and output units [B, K, U]."""
        log_prob, logits = self.session.run(
            [artifact.OUTPUT_LOG_PROB, self.units_output], {artifact.INPUT_X: rows}
        )
        return log_prob.astype(np.float64), logits

    def member_log_probs(self, rows: np.ndarray) -> np.ndarray:
        (log_prob,) = self.session.run([artifact.OUTPUT_LOG_PROB], {artifact.INPUT_X: rows})
        return log_prob.astype(np.float64)
