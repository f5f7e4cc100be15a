"""The type stubs (albef/__init__.pyi) and the docstrings cover every call."""

import ast
import pathlib
import re

import albef

STUBS = ast.parse((pathlib.Path(albef.__file__).parent / "__init__.pyi").read_text())


def stub_functions(body):
    return {node.name: [a.arg for a in node.args.args if a.arg != "self"] for node in body
            if isinstance(node, ast.FunctionDef)}


def runtime_parameters(function):
    # pybind11 writes the signature as the docstring's first line.
    first = function.__doc__.splitlines()[0]
    inside = first[first.index("(") + 1: first.rindex(")")]
    return [p.split(":")[0].strip() for p in re.split(r",\s*(?![^\[]*\])", inside) if p and not p.startswith("self")]


def test_every_public_call_has_a_stub_with_its_parameters():
    classes = {node.name: node for node in STUBS.body if isinstance(node, ast.ClassDef)}
    functions = stub_functions(STUBS.body)
    for name in albef.__all__:
        if name == "__version__":
            continue
        if isinstance(getattr(albef, name), type):
            assert name in classes, name
        else:
            assert functions[name] == runtime_parameters(getattr(albef, name)), name
    for cls in (albef.Model, albef.Gallery):
        stubbed = stub_functions(classes[cls.__name__].body)
        methods = [n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")]
        properties = [n for n, v in vars(cls).items() if isinstance(v, property)]
        for method in methods:
            assert stubbed[method] == runtime_parameters(getattr(cls, method)), f"{cls.__name__}.{method}"
            assert len(getattr(cls, method).__doc__.splitlines()) > 1, f"{cls.__name__}.{method} has no docstring"
        for name in properties:
            assert name in stubbed, f"{cls.__name__}.{name}"
        assert stubbed["__init__"] == runtime_parameters(cls.__init__)
    assert "embed_images" in albef.Model.__doc__ + "".join(m.__doc__ or "" for m in vars(albef.Model).values() if callable(m))
