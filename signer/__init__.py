"""signer: hashing, ledger format, chaining, signing through a key backend, verification.

Must not: touch the network or the camera.
"""
