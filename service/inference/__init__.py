"""Arrays in, arrays out: the ensemble engine on onnxruntime, the batcher, per-app serving state.
Nothing here sees HTTP."""
