"""The ledger on PostgreSQL (through an async driver): one job shared by every host that runs it.

The same tables and states as the SQLite ledger, each row keyed by the job's name as well, in
a schema of their own (``asyncdicom``) with numbered migrations. Hosts share the work with the
standard lease pattern: a host claims a few pending requests at a time with ``SELECT … FOR
UPDATE SKIP LOCKED``, marks them with its holder name and a lease that its heartbeat renews;
a host that stops renewing (killed, cut off) loses them when the lease runs out and the others
claim them. A request is recorded done once: a result never overwrites ``done``, and instance
rows are unique per job, SOP Instance UID and path. The job's association budget is a table of
slots leased the same way (:class:`.slots.SharedSlots`).

Connections: one for the data (plan, results, reports), one for leases and heartbeats, so that
a long commit never delays a renewal; the latter also LISTENs for what the other hosts free
(slots, requests), so that nobody polls for them. They reconnect when the server restarts; a
host whose heartbeat cannot reach the server for a third of a lease stops with an error rather
than go on without its leases.

Modules: :mod:`.ledger` (the job's rows, claims and leases), :mod:`.slots` (the association
budget), :mod:`.connection` (reconnecting connections, notifications), :mod:`.driver` (the one
module that imports the driver: sessions, notifications, which errors mean a lost server),
:mod:`.sql` (the schema and the longer statements), :mod:`.url` (the database named for
messages, without the driver). Only this package talks to PostgreSQL.
"""
