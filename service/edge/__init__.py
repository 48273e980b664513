"""The gRPC edge: decoding and validating requests, the lstm.v1 and KServe v2 servicers, Explain,
identity and revocation, error statuses, and the optional web page. Talks to an engine only
through api.engine.EngineApi.
"""
