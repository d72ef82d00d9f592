"""Recovery orchestration: bringing workloads up from recovery points at a target site.

One module per provider (`aws`: EC2 instances from `ebs` recovery points). Each starts a
recovery plan's boot groups in order, limits its own API traffic, tags everything it
creates with the execution, and can clean an execution up (test drills, failed runs).
"""
