"""``python -m ibnb``: run notebooks, mark stale pages, build the book (see ``ibnb.book.runner``)."""
from ibnb.book.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
