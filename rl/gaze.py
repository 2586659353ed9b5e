"""Gaze on the Prize encoders (placeholder until the gaze issue lands; registers nothing yet)."""
