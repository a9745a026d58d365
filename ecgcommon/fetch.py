"""Download the MIT-BIH Arrhythmia Database from PhysioNet through wfdb (needs internet)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import wfdb

from ecgcommon.records import resolve_data_dir

log = logging.getLogger(__name__)


def fetch(database: str, dest: Path, records: list[str] | None = None) -> Path:
    """Fetch a PhysioNet database (e.g. 'mitdb') into `dest`, with its RECORDS list."""
    dest.mkdir(parents=True, exist_ok=True)
    names = records or wfdb.get_record_list(database)
    wfdb.dl_database(database, dl_dir=str(dest), records=names, annotators="all")
    (dest / "RECORDS").write_text("\n".join(names) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", default="mitdb", help="PhysioNet database slug")
    parser.add_argument("--data-dir", default=None, help="destination (default $ECG_DATA_DIR)")
    parser.add_argument("--records", nargs="*", default=None, help="subset of record names")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    dest = resolve_data_dir(args.data_dir)
    fetch(args.database, dest, args.records)
    log.info("fetched %s into %s", args.database, dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
