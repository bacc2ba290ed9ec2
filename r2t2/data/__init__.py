"""Data sets and the one sample format they share."""
