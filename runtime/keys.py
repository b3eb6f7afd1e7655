"""Every Redis key the runtime uses, named in one place. All are prefixed by the app's name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    app: str

    @property
    def stream(self) -> str:
        """The task stream every worker reads from (a consumer group named `workers`)."""
        return f"{self.app}:tasks"

    @property
    def group(self) -> str:
        return "workers"

    @property
    def started(self) -> str:
        """Hash of stream entry id -> start mark (attempt, time, worker) while its task runs."""
        return f"{self.app}:started"

    @property
    def lease_clock(self) -> str:
        """Redis time (ms) of the last lease renewal or reclaim by any worker: a gap means Redis paused."""
        return f"{self.app}:lease-clock"

    @property
    def reclaim_fence(self) -> str:
        """Redis time (ms) before which no worker reclaims (owners get a lease period after a gap)."""
        return f"{self.app}:reclaim-fence"

    @property
    def delayed(self) -> str:
        """Sorted set of messages waiting for their time (delays and retry backoffs), scored by due time."""
        return f"{self.app}:delayed"

    @property
    def dead(self) -> str:
        """Sorted set of failed run ids (the dead-letter list), scored by failure time."""
        return f"{self.app}:dead"

    @property
    def scheduler_lock(self) -> str:
        """Held by the one running scheduler."""
        return f"{self.app}:scheduler"

    def cron_last(self, function: str) -> str:
        """The last minute a cron function was enqueued for, so a restart never fires it twice."""
        return f"{self.app}:cron:{function}"

    def result(self, run_id: str) -> str:
        return f"{self.app}:result:{run_id}"

    def workers(self) -> str:
        """Hash of live workers -> last heartbeat, for the dashboard and health."""
        return f"{self.app}:workers"
