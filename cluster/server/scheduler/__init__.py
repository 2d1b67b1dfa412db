"""The scheduler: places pending pods on nodes (filters, scores, binding, FailedScheduling)."""

from k3py.cluster.server.scheduler.scheduler import Scheduler, SchedulerSettings

__all__ = ["Scheduler", "SchedulerSettings"]
