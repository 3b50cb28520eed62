"""``python -m ibnb``: run notebooks, mark stale pages, build the book (see ``ibnb.runner``)."""
from ibnb.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
