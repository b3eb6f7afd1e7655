"""Delivery on Redis: the broker on streams, key names, messages, fenced leases, queue order, grouped sends,
and Redis clients from REDIS_URL. Knows nothing of the store or of the processes above it."""
