"""The control plane's service layer: validation and state changes, shared by every face
(gRPC now, REST and the web UI later). Raises dr_common.errors; knows nothing of gRPC."""
