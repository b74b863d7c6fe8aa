"""On-call schedules: who covers a specialty service now, with a backup (metadata only)."""
