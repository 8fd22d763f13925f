"""The artifact contract shared by the trainer (model/) and the service: the manifest schema,
masks from degrees, the mixture math, the members' nets, their exact sampler and the parity check.
Imports neither torch nor any serving code."""
