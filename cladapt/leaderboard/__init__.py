"""Leaderboard: aggregation of result CSVs (pandas) and the static site generator (jinja2)."""
