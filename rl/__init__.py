"""Stage 5: SAC on Meta-World with the paper's encoders, the gaze encoders, the grid and the report.

Importing the package imports nothing heavy: env workers (rl.envs) import it and must not pay for
torch (~0.5 GB and seconds per process). rl.encoders holds the one registry of encoder names and
completes it with the gaze encoders (rl.gaze) when it is imported.
"""
