"""``python -m benchmarks [--quick] ...``: run the suite, write benchmarks/results/."""

import sys

from .suite import main

sys.exit(main())
