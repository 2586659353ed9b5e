"""Stage 5: SAC on Meta-World with the paper's encoders, the gaze encoders, the grid and the report.

Importing the package registers every encoder: rl.encoders holds the registry and the Table I
encoders, rl.gaze adds the gaze encoders to it (rl.encoders never imports rl.gaze).
"""
from rl import encoders, gaze  # noqa: F401  (registration)
