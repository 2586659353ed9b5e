"""Stage 1: Meta-World pixel environment, frame collection, shards, oracle annotator, click-to-map.

Importing this package chooses a headless OpenGL backend before MuJoCo is imported anywhere.
"""

from data.gl import configure_headless_gl

configure_headless_gl()
