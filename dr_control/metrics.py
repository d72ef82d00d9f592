"""Prometheus metrics of the control plane."""

from prometheus_client import Counter, Gauge

CYCLES = Counter("dr_cycles_total", "Replication cycles by the state they reached", ["state"])
RPO_LAG = Gauge("dr_plan_rpo_lag_seconds",
                "Seconds since the plan's newest recovery point (or since it was created)",
                ["plan"])
RPO_TARGET = Gauge("dr_plan_rpo_seconds", "The plan's recovery-point objective", ["plan"])
TASKS_QUEUED = Gauge("dr_tasks_queued", "Tasks waiting for a node", ["kind"])
NODES_ONLINE = Gauge("dr_nodes_online", "Nodes whose heartbeat is within the lease period")
SCHEDULER_LEADER = Gauge("dr_control_scheduler_leader",
                         "1 while this replica runs the scheduler (holds the leader lock)")
