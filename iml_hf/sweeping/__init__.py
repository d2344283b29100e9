"""The sweep's parts: its grid of runs, its manifest, status lines, interruption, and the local and SLURM launchers."""
