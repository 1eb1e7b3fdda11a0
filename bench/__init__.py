"""Benchmarks (not tests) for comfyui.js: run with `python3 build.py bench`."""
