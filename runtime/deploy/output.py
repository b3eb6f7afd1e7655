"""The rendered objects as text: a YAML stream, or a kustomize folder of one file per object."""

from __future__ import annotations

from pathlib import Path

import yaml

from runtime.deploy.renderer import Object


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so the manifest in its ConfigMap reads like the file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump_one(obj: Object) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def dump_yaml(objects: list[Object]) -> str:
    """A multi-document YAML stream; the same objects always give the same text."""
    return "".join(f"---\n{_dump_one(obj)}" for obj in objects)


def file_name(obj: Object) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def write_kustomize(objects: list[Object], out_dir: Path) -> list[Path]:
    """One file per object plus `kustomization.yaml` listing them in apply order; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for obj in objects:
        path = out_dir / file_name(obj)
        path.write_text(_dump_one(obj))
        paths.append(path)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [path.name for path in paths],
    }
    index = out_dir / "kustomization.yaml"
    index.write_text(_dump_one(kustomization))
    return [*paths, index]
