"""What several services must agree on: data access, beat classes, wire format, beat windowing."""
