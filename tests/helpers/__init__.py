"""Shared code of the test suite and the benches: real brokers on free ports, waits on events
or real state (never a fixed sleep), and the harnesses several test modules drive.

Test modules import from here (`from tests.helpers.waits import wait_until`), never from each
other; `pythonpath = ["."]` in the pytest settings makes `tests.helpers` importable everywhere.
"""
