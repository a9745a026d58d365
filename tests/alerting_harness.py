"""Moved to tests/helpers/alerting.py; this name re-exports it until the last importer switches
to `from tests.helpers.alerting import ...`."""

from tests.helpers.alerting import *  # noqa: F403
