"""Foundations every stage uses: errors and exit codes, statistics, console rendering. Imports nothing of sdsuite."""
