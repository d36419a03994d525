"""Core I/O and contracts: storage, table schemas, names, leases, logging and progress,
Ray start-up, precision."""
