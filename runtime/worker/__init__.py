"""The worker: its loop and what only it uses (attempts, commits, time limits, the sync pool, cancellation, the
supervisor of `--processes N`), and its taskiq middlewares."""
