"""The sans-IO engine: the compiled ``transitions`` machine, the core (events in,
effects out) and its snapshots. It performs no I/O and imports no driver."""
