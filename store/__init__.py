"""store: the unit's SQLite index of recordings, segments, events and ledger positions.

Owns: ``index.sqlite``'s schema and every read and write of it. The recorder journals
recordings, segments and events into it; the sealer takes pending events from it and
records where each ledger entry is. Must not: hold media or be the only copy of anything
a verifier needs (the evidence files and the ledger are the truth).
"""
