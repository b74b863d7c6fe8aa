"""Escalation of unacknowledged urgent messages: policy, timers and the worker's steps."""
