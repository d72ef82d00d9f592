"""Prometheus metrics of the control plane."""

from prometheus_client import Counter, Gauge, Histogram

CYCLES = Counter("dr_cycles_total", "Replication cycles by the state they reached", ["state"])
RPO_LAG = Gauge("dr_plan_rpo_lag_seconds",
                "Seconds since the plan's newest recovery point (or since it was created)",
                ["plan"])
RPO_TARGET = Gauge("dr_plan_rpo_seconds", "The plan's recovery-point objective", ["plan"])
TASKS_QUEUED = Gauge("dr_tasks_queued", "Tasks waiting for a node", ["kind"])
NODES_ONLINE = Gauge("dr_nodes_online", "Nodes whose heartbeat is within the lease period")
SCHEDULER_LEADER = Gauge("dr_control_scheduler_leader",
                         "1 while this replica runs the scheduler (holds the leader lock)")
# RPO compliance per plan (also GetRpoReport, `drctl report rpo`).
CONTROL_RPO_LAG = Gauge("dr_control_rpo_lag_seconds",
                        "Seconds since the plan's newest recovery point (since its creation "
                        "without one): what is compared with its RPO", ["plan"])
RECOVERY_POINT_AGE = Gauge("dr_control_recovery_point_age_seconds",
                           "Age of the plan's newest recovery point (absent without one)",
                           ["plan"])
RPO_MET = Gauge("dr_control_rpo_met", "1 while the plan's RPO is met, 0 when breached",
                ["plan"])
SCHEDULER_PASS = Histogram("dr_control_scheduler_pass_seconds",
                           "Duration of one scheduler pass (Scheduler.tick)",
                           buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
