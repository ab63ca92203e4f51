"""Subcommands of the fastdllm-ray CLI."""
