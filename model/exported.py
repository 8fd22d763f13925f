"""An exported artifact evaluated offline, as the service answers: the contract's ensemble math
(``service.contract.ensemble``) on the graph's member log-likelihoods from onnxruntime, one thread.

Torch-free: export estimates log Z with it from the bytes it is about to write; the study opens
the artifact directories it exported.
"""

from pathlib import Path

import onnx

from service.contract import artifact
from service.contract.graph_nets import member_nets_from_graph
from service.contract.onnx_members import OnnxMembers, cpu_session
from service.contract.sampler import MemberNet


class ExportedMembers(OnnxMembers):
    """The exported mixture: exact draws from its nets' sampler (the service's own) and the
    graph's member log-likelihoods on onnxruntime, one thread, as the service's engine computes
    them."""

    def __init__(self, manifest: artifact.Manifest, model_bytes: bytes, nets: list[MemberNet]):
        super().__init__(manifest, cpu_session(model_bytes), nets)

    @classmethod
    def open(cls, directory: Path) -> "ExportedMembers":
        """An artifact directory, its graph checked against the manifest as the service checks it
        at load (the float64 parity was checked when it was exported)."""
        manifest = artifact.read_manifest(directory)
        model = onnx.load(str(artifact.verify_onnx_file(directory, manifest)))
        return cls(manifest, model.SerializeToString(), member_nets_from_graph(model, manifest))
