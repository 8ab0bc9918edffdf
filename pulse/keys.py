"""Key names and defaults: the one place that knows how pulse lays out a namespace in Redis.

Every key of a namespace starts with ``pulse:{<namespace>}:``. The braces are a Redis Cluster
hash tag, so one namespace lives in one slot (multi-key scripts work on a cluster), and one ACL
rule (``~pulse:{ns}:*``, ``&pulse:{ns}:*``) covers all of it.
"""

from __future__ import annotations

PREFIX = "pulse"
DEFAULT_NAMESPACE = "default"
DEFAULT_STALL_SECONDS = 180
DEFAULT_RETENTION_DAYS = 7.0
DEFAULT_HEARTBEAT_PUSH_SECONDS = 30.0
# The event stream is a transport, not the record (the task hashes and the mirror are):
# an approximate cap keeps XADD O(1) while holding days of events for a slow relay.
STREAM_MAXLEN = 100_000
# Step history (ETA and learned stall times): runs kept per (task name, step name), how many
# such histories a namespace keeps (step names with numbers in them must not fill Redis),
# how long an unused one stays, and the fewest past runs anything is learned from.
HISTORY_RUNS = 50
HISTORY_CAP = 2000
HISTORY_TTL_SECONDS = 30 * 86400
HISTORY_MIN_RUNS = 3
# How long a create's operation id (an HTTP client's Idempotency-Key) is remembered: a retry
# within it gets the task the first call made, a later one makes a new task.
OP_TTL_SECONDS = 86400


class Keys:
    """The key names of one namespace."""

    __slots__ = ("namespace",)

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    @property
    def prefix(self) -> str:
        return f"{PREFIX}:{{{self.namespace}}}:"

    def task(self, task_id: str) -> str:
        """Hash holding one task: its snapshot JSON and the fields the scripts index by."""
        return f"{self.prefix}task:{task_id}"

    @property
    def updated(self) -> str:
        """Sorted set of every task id, scored by last update (ms); ``status`` reads it."""
        return f"{self.prefix}updated"

    @property
    def running(self) -> str:
        """Sorted set of running task ids, scored by the time (ms) they count as stalled."""
        return f"{self.prefix}running"

    @property
    def ids(self) -> str:
        """Sorted set of every task id with score 0, for prefix lookups by lexical range."""
        return f"{self.prefix}ids"

    @property
    def events(self) -> str:
        """Stream of every event of the namespace, read by the workers' consumer groups."""
        return f"{self.prefix}events"

    def pushed(self, task_id: str) -> str:
        """Hash of what the relays pushed for a task, per sink: the last event it was given
        (``sent:<sink name>``) and when it was last given a heartbeat (``hb:<sink name>``)."""
        return f"{self.prefix}pushed:{task_id}"

    def relays(self, group: str) -> str:
        """Sorted set of the relays of a consumer group, scored by when each entry lapses."""
        return f"{self.prefix}relays:{group}"

    def memory(self, key: str) -> str:
        """String a sink keeps across pushes, e.g. the chat message it edits for a task."""
        return f"{self.prefix}memory:{key}"

    @property
    def target(self) -> str:
        """Hash holding (field ``id``) a random id made on first contact: names this Redis and
        namespace for the offline journal, whatever URL reaches it (scripts/target.lua)."""
        return f"{self.prefix}target"

    @property
    def dead(self) -> str:
        """Stream of pushes a sink failed to deliver after its last try."""
        return f"{self.prefix}dead"

    @property
    def history(self) -> str:
        """Hash of step histories, a field per (task name, step name): see
        ``scripts/include/history.lua``."""
        return f"{self.prefix}history"

    @property
    def history_used(self) -> str:
        """Sorted set of the history hash's fields, scored by when a run was last added (ms),
        to drop unused and least recently used histories."""
        return f"{self.prefix}history:used"

    def op(self, op_id: str) -> str:
        """Hash (field ``id``) naming the task a create with this operation id made; expires
        after ``OP_TTL_SECONDS`` (scripts/create.lua)."""
        return f"{self.prefix}op:{op_id}"

    @property
    def channel(self) -> str:
        """Pub/sub channel carrying the same events, for live views."""
        return f"{self.prefix}events"
