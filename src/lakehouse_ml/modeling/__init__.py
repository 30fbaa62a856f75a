"""Model-side helpers shared by pipelines: metrics, slices and report figures."""
