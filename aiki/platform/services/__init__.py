"""Use cases of the core. Each public function owns exactly one database transaction."""
