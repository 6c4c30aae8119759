"""Great Expectations suites, vector summaries, drift and the Data Docs report (a library:
it gets paths and typed thresholds; ``pipelines.stages.validate`` is the stage that runs it)."""
