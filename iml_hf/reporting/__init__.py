"""Reporting: aggregate runs into tables, figures and model cards, with the statistics they need."""
