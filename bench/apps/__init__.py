"""The apps the benchmark runs: our runtime's app (`ours/`) and one module per baseline system."""
