"""Exporters: a capture's frames (``snapprof.analysis.frames.CaptureFrames``) → other tools.

``perfetto`` builds Chrome trace-event JSON that the Perfetto UI (and chrome://tracing) opens;
``csv`` gives one pandas table per capture table. Like the reporters, exporters take frames
and metadata, never paths: only ``snapprof export`` (snapprof/commands/export.py) writes files.
"""
