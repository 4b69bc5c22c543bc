"""The one-command GPU run of the benchmarks (``bash benchmarks/gpu/run.sh``)."""
