"""drctl: the operator's command line for dr-control.

The CLI is a thin gRPC client: every command is one call (or one call and a poll loop)
against the public API in proto/dr/v1, so what drctl can do, grpcurl and the web UI can
do too. Nothing here holds state between runs.

Modules:
- main: argument parsing, dispatch, and the mapping of failures to exit codes;
- names: short ids <-> full resource names;
- units: parsing and printing of sizes, durations and times;
- table, output: aligned tables for people, JSON for scripts;
- client: the channel and the service stubs;
- wait, progress: polling long-running operations and cycles;
- commands/: one module per resource group.
"""
