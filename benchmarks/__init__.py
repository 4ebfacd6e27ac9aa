"""Performance and quality benchmarks of GANNO (run each as `python -m benchmarks.NAME`)."""
