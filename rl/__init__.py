"""Stage 5: SAC on Meta-World with the paper's encoders, the gaze encoders, the grid and the report."""
