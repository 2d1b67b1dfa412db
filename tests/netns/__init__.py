"""Tests in network namespaces the tests create (the netns tier)."""
