"""The chat benchmarks' anchor: a minimal Django + ninja project doing one insert.

What a user could start from: ``django-admin startproject``'s settings (its apps and its
seven middleware, ``DEBUG`` off), django-ninja, one model and one ``POST`` endpoint that
inserts one row, on SQLite in WAL mode (or PostgreSQL with ``DATABASE_URL``). None of
Grace's code is imported. bench/bench_chat.py and bench/bench_ws.py serve it with the
same server (daphne, one process) beside Grace in the same run.
"""
