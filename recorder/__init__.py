"""recorder: pre-event ring, segmenting, containers, crash-safe writes, recovery.

Owns: turning a stream of encoded packets into durable, read-only fragmented-MP4 segment
files on disk, and the SQLite index that lists them.

Must not: sign, publish, or know about officers. It reports what it made through events
the daemon subscribes to.
"""
