"""What operators read and do, for every process and face: the operations on runs and queues (the
inspector), Prometheus metrics, health, live workers."""
