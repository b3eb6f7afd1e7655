"""Every Redis key the runtime uses, named in one place. All are prefixed by the app's name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueKeys:
    """One queue's keys. They share a hash tag, `{app:queue}`, so a queue's Lua scripts stay in one Redis
    Cluster slot."""

    app: str
    name: str

    @property
    def _tag(self) -> str:
        return f"{{{self.app}:{self.name}}}"

    @property
    def stream(self) -> str:
        """The queue's task stream (consumer group `workers`)."""
        return f"{self._tag}:tasks"

    @property
    def delayed(self) -> str:
        """Sorted set of messages waiting for their time (delays and retry backoffs), scored by due time."""
        return f"{self._tag}:delayed"

    @property
    def dead(self) -> str:
        """Sorted set of this queue's dead letters (run ids, scored by failure time); each is also in the
        app's list, `Keys.dead`, which has them all (and those from before queues had their own)."""
        return f"{self._tag}:dead"

    @property
    def started(self) -> str:
        """Hash of stream entry id -> start mark (attempt, time, worker) while its task runs."""
        return f"{self._tag}:started"

    @property
    def lease_clock(self) -> str:
        """Redis time (ms) of the last lease renewal or reclaim by any worker: a gap means Redis paused."""
        return f"{self._tag}:lease-clock"

    @property
    def reclaim_fence(self) -> str:
        """Redis time (ms) before which no worker reclaims (owners get a lease period after a gap)."""
        return f"{self._tag}:reclaim-fence"

    def unique(self, function: str, token: str) -> str:
        """Held by the unfinished run of `function` with this idempotency key (or these arguments)."""
        return f"{self._tag}:unique:{function}:{token}"

    def cancel(self, run_id: str) -> str:
        """Set when the run is cancelled: a worker that gets its message does not start it."""
        return f"{self._tag}:cancel:{run_id}"

    def fire_guard(self, function: str, due: int) -> str:
        """Set when the cron fire of `function` due at this Unix time was queued (in the queue's slot, so the
        script that queues it touches one slot)."""
        return f"{self._tag}:cron-fire:{function}:{due}"

    def debounce(self, function: str, key: str) -> str:
        """Hash of the debounced run of `function` gathering enqueues for this key value: its run id, its first
        enqueue's time and its message (runtime/flow/debounce.py)."""
        return f"{self._tag}:debounce:{function}:{key}"

    def batch(self, function: str, key: str) -> str:
        """Hash of the open batch of `function` for this key value: its run id, its message and how many items
        it has (runtime/flow/batch.py)."""
        return f"{self._tag}:batch:{function}:{key}"

    @property
    def batch_items_prefix(self) -> str:
        """`batch_items(run_id)` without the run id: the batch script names a new batch's list itself."""
        return f"{self._tag}:batch-items:"

    def batch_items(self, run_id: str) -> str:
        """List of a batch run's items (JSON), read by each of its attempts; expires a while after its last item."""
        return f"{self.batch_items_prefix}{run_id}"

    @property
    def paused(self) -> str:
        """Set while the queue is paused: workers take nothing from it."""
        return f"{self._tag}:paused"


@dataclass(frozen=True)
class Keys:
    app: str

    def queue(self, name: str) -> QueueKeys:
        return QueueKeys(self.app, name)

    @property
    def group(self) -> str:
        return "workers"

    @property
    def cancel_channel(self) -> str:
        """Pub/sub channel of cancelled run ids: the worker running one stops it."""
        return f"{self.app}:cancel"

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

    # --- events (one hash tag, `{app:events}`, so their Lua scripts stay in one Redis Cluster slot) -----------

    @property
    def events(self) -> str:
        """Stream of recent events (name, data, id, the runs each started and woke), capped."""
        return f"{{{self.app}:events}}:log"

    def event_seen(self, event_id: str) -> str:
        """Where the delivery of an event with this id stands, for EVENT_DEDUPE_SECONDS: once it was sent, the same
        id again is ignored."""
        return f"{{{self.app}:events}}:seen:{event_id}"

    def event_waking(self, event_id: str) -> str:
        """Hash of the waiters an event with this id claimed, until its send went through: a send of the same id
        again wakes those that a failed one claimed but may not have woken."""
        return f"{{{self.app}:events}}:waking:{event_id}"

    def event_waits(self, name: str) -> str:
        """Hash of the runs waiting for an event of this name: `run_id/step` -> what they wait for."""
        return f"{{{self.app}:events}}:waits:{name}"

    def event_got(self, member: str) -> str:
        """The event that ended a run's wait (`run_id/step`), until the run has saved it as its step."""
        return f"{{{self.app}:events}}:got:{member}"

    # --- flow control (one hash tag, `{app:flow}`; their scripts also touch a queue's stream: a single Redis) ----

    def flow(self, name: str) -> str:
        """A flow-control key: `running:<limit>` (sorted set of the runs holding a slot, scored by when their hold
        lapses), `waiting:<limit>` (list of the runs waiting for a slot), `throttle:<function>:<key>` (GCRA's
        theoretical arrival time), `clock`/`fence` (a gap means Redis paused: expired holds are kept a lease
        longer), `waiting` (the set of waiting lists), `limits` (waiting list -> its running set and limit),
        `counts:<function>` (throttled and skipped per key)."""
        return f"{{{self.app}:flow}}:{name}"

    def rate(self, function: str, key: str) -> str:
        """Sorted set of the runs of `function` a rate limit let through in its last period, for this key value
        ("" without a key), scored by when (Redis time, ms); never more than the limit's entries."""
        return f"{{{self.app}:flow}}:rate:{function}:{key}"
