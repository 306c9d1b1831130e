"""Runnable examples of Aiki workflows."""
