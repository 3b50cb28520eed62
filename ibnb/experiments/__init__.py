"""Experiment definitions: presets (per profile) and the sweep logic each chapter notebook calls."""
