"""Side-by-side benchmarks of our runtime against what users would pick instead (`python -m bench`)."""
