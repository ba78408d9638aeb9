"""The upload endpoint the unit sends segment files to and the collector serves.

Owns: the path; the query and the replies are specified in docs/CENTRAL.md.
"""

UPLOAD_PATH = "/v1/uploads/"  # + <sha256>?segment=<name>; see docs/CENTRAL.md
