"""`python -m annotate_app --task reach-v3 --annotator alice`: serve the annotation page."""

from annotate_app.app import main

main()
