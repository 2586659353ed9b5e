"""`python -m pipeline.report`: see pipeline/report/__init__.py."""

from pipeline.report.writer import main

if __name__ == "__main__":
    main()
