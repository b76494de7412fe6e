"""Test support for the e2e rollout stories: model-server stand-ins, a traffic generator, the router
as a process, ModelExperiment builders and status readers. See tests/e2e/conftest.py for the fixture."""
