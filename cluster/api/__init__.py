"""The Kubernetes object model: metadata, validation, patches, selectors, quantities. No I/O."""
