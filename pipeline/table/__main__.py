"""`python -m pipeline.table`: see pipeline/table/__init__.py."""

from pipeline.table.runner import main

if __name__ == "__main__":
    main()
