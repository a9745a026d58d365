"""`python -m alerting`: the alerting service (see alerting/service.py)."""

import sys

from alerting.service import main

if __name__ == "__main__":
    sys.exit(main())
