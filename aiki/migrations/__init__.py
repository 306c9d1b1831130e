"""Alembic migrations, shipped inside the package so `aiki migrate` works from a wheel."""
