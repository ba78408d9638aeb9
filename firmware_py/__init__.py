"""firmware_py: the daemon that wires the rooms together.

Owns: configuration, the state of the unit, the command line, systemd notification.
It decides; hw, recorder, signer, store and uplink do.

Must not: do I/O that belongs to the rooms it wires.
"""

__version__ = "0.1.0"
