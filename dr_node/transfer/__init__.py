"""The paired topology's chunk streams (DESIGN section 2, proto/dr/v1/transfer.proto).

A source node replicates a disk exactly as it would to a repository it can reach: the
engine (dr_node.engine) reads, classifies, hashes and encodes chunks, and hands them
to a sink. Here the sink is `client.RemoteSink`, which streams them to the paired
target node; `server.TransferServicer` there verifies each chunk and writes it through
an ordinary `RepositorySink`. One pipeline with a network hop in the middle:

    source disk -> engine -> RemoteSink ==gRPC stream==> TransferServicer -> RepositorySink

(the target's sink comes from its Target, dr_common.targets.open_target).

Flow control is pull-based (`credits`): the target grants bytes as its writes complete.
Errors cross the hop as gRPC statuses with the error's reason in their details (the
mapping both daemons share, dr_common.grpc_errors), so the source reports the target's
own words.
"""

from __future__ import annotations

import grpc

from dr_common import grpc_errors
from dr_common.errors import DRError
from dr_common.repository import ID_SIZE

# The reason of a stream that broke under way (not refused by the target): the source
# node resumes it in place from its checkpoint (dr_node.agent).
PAIR_DISCONNECTED = "pair-disconnected"
# Chunks up to 64 MiB (the largest chunk size a plan may choose is well below this),
# plus the message's own fields.
MAX_MESSAGE_BYTES = 80 << 20

def split_ids(blob: bytes) -> list[bytes]:
    """The ids of a CommitIds/previous_segment blob (ID_SIZE bytes each)."""
    return [blob[i:i + ID_SIZE] for i in range(0, len(blob), ID_SIZE)]


def error_from_rpc(e: grpc.aio.AioRpcError, pair: str) -> DRError:
    """What a source node reports when its stream to `pair` fails."""
    theirs = grpc_errors.from_rpc_error(e)
    if theirs is not None:  # the target node's own error: its message says what to do
        return DRError(f"paired target node {pair}: {theirs.message}", reason=theirs.reason,
                       retryable=theirs.retryable)
    # Without the target's reason, these come from the transport (a reset connection
    # ends in-flight streams as INTERNAL or CANCELLED as often as UNAVAILABLE).
    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                    grpc.StatusCode.CANCELLED):
        return DRError(f"the stream to paired target node {pair} broke ({e.code().name}: "
                       f"{e.details()}); it resumes from its checkpoint",
                       reason=PAIR_DISCONNECTED, retryable=True)
    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DRError(f"paired target node {pair} did not answer in time",
                       reason="pair-unavailable", retryable=True)
    return DRError(f"paired target node {pair} refused the stream: {e.code().name}: "
                   f"{e.details()}", reason="pair-refused", retryable=True)
