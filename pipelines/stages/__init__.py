"""The stage layer: one module per ``dvc.yaml`` stage, each ``run(config, layout, ...) -> summary``.

Stages do all of a stage's I/O through ``pipelines.layout.Layout`` and call the
libraries (``features``, ``training``, ``evaluation``, ``validation``, the Beam pipeline
in ``pipelines.beam``) with data and explicit paths.
"""
