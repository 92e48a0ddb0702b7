"""One module per dataset: raw download -> records. The registry is `facecorpus.converters.registry`."""
