"""``python -m synthmed`` (also what ``torchrun ... -m synthmed train ...`` runs)."""

from synthmed.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
