"""Prometheus metrics of a replication node (DESIGN section 5, observability)."""

from prometheus_client import Counter, Gauge, Histogram

BYTES = Counter("dr_node_bytes_total", "Bytes by stage", ["stage"])  # read, sent, stored
CHUNKS = Counter("dr_node_chunks_total", "Chunks by outcome",
                 ["outcome"])  # read, sent, stored, unchanged, zero, deduplicated
CHUNK_SECONDS = Histogram("dr_node_chunk_seconds", "Time to read, hash and store one chunk",
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
BUDGET_USED = Gauge("dr_node_budget_used_bytes", "Bytes held under the node's byte budget")
BUDGET_WAIT = Histogram("dr_node_budget_wait_seconds", "Time spent waiting for the byte budget")
WINDOW = Gauge("dr_node_window_chunks", "Chunks allowed in flight per disk", ["disk"])
WATERMARK = Gauge("dr_node_watermark_bytes", "Bytes below the disk's low watermark", ["disk"])
TASKS = Counter("dr_node_tasks_total", "Tasks finished by kind and outcome", ["kind", "outcome"])
RUNNING = Gauge("dr_node_running_tasks", "Tasks running on this node")
TARGET_CONCURRENCY = Gauge("dr_node_target_concurrency",
                           "Adaptive limit of requests in flight per target", ["target"])
THROTTLES = Counter("dr_node_throttles_total", "Throttling answers from targets", ["target"])

# Paired topology (dr_node.transfer). `side` is "source" or "target".
TRANSFER_CHUNKS = Counter("dr_transfer_chunks_total", "Chunks through pair streams by outcome",
                          ["side", "outcome"])  # stored, deduplicated, rejected
TRANSFER_BYTES = Counter("dr_transfer_bytes_total", "Chunk bytes through pair streams",
                         ["side"])
TRANSFER_STREAMS = Gauge("dr_transfer_streams", "Disk streams open", ["side"])
TRANSFER_INFLIGHT = Gauge("dr_transfer_inflight_bytes",
                          "Chunk bytes sent and not yet acknowledged", ["side"])
TRANSFER_ERRORS = Counter("dr_transfer_errors_total", "Broken or refused pair streams",
                          ["side", "reason"])
TRANSFER_RESUMES = Counter("dr_transfer_resumes_total",
                           "Broken pair streams the source node resumed in place")
TRANSFER_RTT = Gauge("dr_transfer_rtt_seconds", "Smoothed round trip to a paired node",
                     ["pair"])
