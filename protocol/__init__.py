"""protocol: what unit and centre say to each other, so both can import it without
importing each other.

Owns: MQTT topic names (``topics``), the JSON Schemas of every message and their
validators (``schemas``), and the upload endpoint's path (``upload``).
Must not: open a connection, or import anything else of the project.
"""
