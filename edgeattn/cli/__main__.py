"""``python -m edgeattn.cli``: the ``edgeattn`` console script (scripts/make_models.py runs it this way)."""

from edgeattn.cli import main

if __name__ == "__main__":
    main()
