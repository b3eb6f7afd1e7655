"""The scheduler process: cron fires, delayed tasks, dead-letter alerts, and the reconciler."""
