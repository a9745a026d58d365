"""`make fuzz`: a bounded fuzz run of every decoder, both message handlers, and the real
services over a real broker and HTTP, written to reports/fuzz.json (docs/security.md)."""
