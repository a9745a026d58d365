"""`python -m detector`."""

from detector.service import main

raise SystemExit(main())
