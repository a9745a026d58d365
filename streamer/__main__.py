"""`python -m streamer`."""

from streamer.service import main

raise SystemExit(main())
