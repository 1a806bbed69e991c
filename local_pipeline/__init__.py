"""Run the synthesized labeling pipeline locally (moto + the real handlers); ``make run-local``; tests; bench.

- ``local_pipeline.harness.LocalPipeline``: the synthesized state machine on moto with the real
  handlers routed in-process (tests, benchmarks, the CLI).
- ``local_pipeline.moto_shims``: the one place where the local run emulates AWS behaviour moto lacks.
- ``local_pipeline.template``: synthesis and the local resolution of the template's intrinsics.
- ``python -m local_pipeline``: ``make run-local`` (moto server on loopback + a real Ollama endpoint).
"""
