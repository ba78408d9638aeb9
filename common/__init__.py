"""common: small helpers shared by the unit and the centre that are neither the evidence
format nor the wire protocol (reading and checking TOML configuration).

Must not: know any schema, or import anything else of the project.
"""
