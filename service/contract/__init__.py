"""The artifact contract shared by the trainer (model/) and the service: the manifest schema,
masks from degrees, the mixture math, the members' nets (read from the graph), their exact sampler,
the ensemble's marginals, completions and samples, and the parity check. Imports neither torch nor
any serving code."""
