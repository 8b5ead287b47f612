"""Shared code of the generate_playlist pipeline; the stage scripts next to it stay thin."""
