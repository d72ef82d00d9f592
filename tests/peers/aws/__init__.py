"""The AWS test peer: moto's server, corrected to AWS's documented EBS semantics, with
EBS volumes that hold real block content, request counters and fault injection.

Run it as `python -m tests.peers.aws --host 127.0.0.1 --port N`; it is ready when
`GET /moto-api/data.json` answers.

What differs from plain moto 5.2.5 (see PEERS.md, "AWS — moto server"):

* The EBS direct APIs are served here, not by moto's EBS backend, following the API
  reference: 512 KiB blocks, checked `DataLength` and SHA256 checksums, block index bounds,
  `ParentSnapshotId` inheritance, `pending` until `CompleteSnapshot` (which checks
  `ChangedBlocksCount` and the LINEAR aggregate checksum), paginated `ListSnapshotBlocks` /
  `ListChangedBlocks`, expiring block tokens, and AWS's JSON error shape (404
  `ResourceNotFoundException` for an unknown snapshot). Snapshot state lives on moto's
  EC2 `Snapshot` objects, so EC2 `DescribeSnapshots` agrees and `/moto-api/reset` clears it.
* Reads (`ListSnapshotBlocks`, `ListChangedBlocks`, `GetSnapshotBlock`) need a completed
  snapshot: a pending one gives `ValidationException` (the reference lists the read APIs
  only for completed snapshots; the snapshot is not readable before completion).
* `CompleteSnapshot` on an already completed snapshot answers `completed` again, so a
  client retrying after a lost response does not fail.
* The reference's `ValidationExceptionReason` has no checksum or data-length member, so
  those failures use `INVALID_PARAMETER_VALUE` with a message naming the field.
* EC2 volumes carry a sparse map of 512 KiB blocks, written over `/_peer/volumes/...`;
  `CreateSnapshot`, `CreateSnapshots` and `CopySnapshot` capture it, `CreateVolume` (and so
  `RunInstances` from an AMI) restores it from the snapshot.
* Faults (throttles in each service's real shape, connection resets, latency) are injected
  by a WSGI middleware in front of moto, configured over `/_peer/faults`.

Peer endpoints (all under `/_peer/`, which no AWS API uses):
  POST   /_peer/reset                           faults, stats, token lifetime to defaults
  POST   /_peer/faults  (JSON)  DELETE /_peer/faults
  GET    /_peer/stats           POST /_peer/stats/reset
  POST   /_peer/volumes/{id}/write?offset=N     body = bytes
  POST   /_peer/volumes/{id}/discard?offset=N&length=M
  GET    /_peer/volumes/{id}/read?offset=N&length=M
  GET    /_peer/volumes/{id}/sha256             hex SHA256 of the whole raw image
`POST /moto-api/reset` also resets the peer's own state.

The modules, one concern each:
  wire.py          responses and errors in each service's wire shape
  blocks.py        512 KiB blocks, the block maps kept on moto's EC2 objects, volume content
  state.py         the peer's own state: faults, request counters, token lifetime
  moto_patches.py  moto lookups, and EC2 corrected: snapshots capture blocks, volumes and
                   AMIs restore them
  ebs.py           the EBS direct APIs
  server.py        the WSGI middleware in front of moto (/_peer/ endpoints, request
                   classification, fault injection) and the server's entry point
  client.py        the test side: the peer as a process, and a client of /_peer/
Only client.py is imported by the tests; the rest runs in the peer's own process.
"""
