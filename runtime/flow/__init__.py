"""Flow control across every worker: concurrency per key, throttle, rate limits, debounce and batches."""
