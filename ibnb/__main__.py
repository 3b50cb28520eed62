"""``python -m ibnb``: run notebooks, mark stale pages, build the book (see ``ibnb.book.cli``)."""
from ibnb.book.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
