"""Sans-IO domain: run statuses and their transitions, identifiers, time. Pure and table-tested."""
