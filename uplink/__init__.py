"""uplink: MQTT topics and payloads, persistent outbox, commands, file upload.

Must not: decide when to record.
"""
