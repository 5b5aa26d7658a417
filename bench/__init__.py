"""The benchmark: what the GPU sees under each pacing strategy (run it with ./tasks.sh bench)."""
