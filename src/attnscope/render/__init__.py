"""Renderers: a Trace (or an analysis result) in, a figure or a page out."""
