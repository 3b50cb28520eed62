"""``python -m ibnb.bench``: fit vs a bare loop per precision/layout, images/s, GFLOP/s and the matmul peak
(:mod:`ibnb.core.bench`)."""
from ibnb.core.bench import main

if __name__ == "__main__":
    main()
