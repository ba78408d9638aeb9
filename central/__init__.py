"""central: fleet monitor, commitment collector, evidence verification at the centre.

Must not: run on the device.
"""
