"""YAML text that reads like hand-written manifests: keys in insertion order, block style,
multi-line strings (the embedded Serve config) as literal `|` blocks."""

from __future__ import annotations

from typing import Any

import yaml


class _BlockDumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False,
                     width=100, allow_unicode=True)


def dump_documents(documents: list[Any], header: str = "") -> str:
    """Several objects as one multi-document YAML file, `header` as leading comment lines."""
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + "---\n".join(dump_yaml(doc) for doc in documents)
