"""Numbers about models and runs: analytic and measured cost, timing, the gate sweep, run records, tables, reports."""
