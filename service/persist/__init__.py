"""What keeps sessions beyond memory: snapshot records in the state store (Redis), their format and
migration, durability (when to write them) and signed export blobs.
"""
