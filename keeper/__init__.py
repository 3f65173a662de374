"""The keeper: a copy of the rooms' durable state in a small Redis of its own (docs/redis.md)."""
