"""evidence: the evidence format, in one place an outside verifier's author can read.

Owns: what a segment part is and how it is hashed (``parts``), the encrypted record
format (``records``), the signed envelope (``envelope``), the ledger entry, the ledger
file and its head (``ledger``), device certificate checks (``certs``), the verifier
(``verify``) and one-case export packages (``export``).
Must not: import anything else of the project, or do device, network or database I/O.
The unit writes through it; ``liuhen verify`` and the centre read through it.
"""
