"""Containers: the `doctor` verb and its checks; the images and compose files live in docker/ and compose*.yaml."""
