"""HTTP: the app and its ASGI front, the hot route, body decoding, schemas, the V1 and V2 routes,
auth, request logs, metrics and the mapping of errors to responses."""
