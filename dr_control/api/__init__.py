"""gRPC face of the control plane: thin servicers over dr_control.services."""
