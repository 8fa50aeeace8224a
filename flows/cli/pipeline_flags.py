"""A pipeline's own CLI flags, generated from its spec's ``predict()`` options model.

``--threshold``, ``--prompt``, ``--index`` ... used to be hard-coded for every pipeline, so
``--prompt`` was accepted (and ignored) for a detector and a plug-in pipeline's options could
not be given at all. Now the command line is read twice: ``--pipeline`` first
(:func:`requested_pipeline`), then the full parser with that pipeline's fields as flags
(:func:`add_pipeline_flags`: ``--field-name``, the snake_case alias comes from
:func:`~pxflow.flows.cli.spellings.both_spellings`, the field's description is the help).
Another pipeline's flag is a one-line usage error naming the pipeline and its flags
(:func:`refuse_other_pipelines_flags`), and the values given become the ``predict()``
keywords (:func:`given_options`), checked by the same model
(:func:`pxflow.pipelines.options.check_options`).
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Sequence

from .values import parse_literal

#: the argparse dest prefix of pipeline flags (kept apart from the command's own flags)
DEST = "pipeline_option__"


def requested_pipeline(argv: Sequence[str], default: str | None) -> str | None:
    """The ``--pipeline`` (or ``--pipeline=``) value in ``argv``, else ``default``; nothing else is parsed."""
    pre = _Silent(add_help=False)
    pre.add_argument("--pipeline", default=default)
    try:
        known, _ = pre.parse_known_args(list(argv))
    except ValueError:  # `--pipeline` with no value: the full parser reports it, on one line
        return default
    return known.pipeline


class _Silent(argparse.ArgumentParser):
    """A pre-parser that prints nothing: its errors are the full parser's to report."""

    def error(self, message: str):  # type: ignore[override]
        raise ValueError(message)


def spec_for(pipeline: str) -> Any:
    """The spec of a pipeline name or YAML path (``ValueError`` for an unknown one, naming the choices)."""
    from pxflow.pipelines.registry import spec_of

    return spec_of(pipeline)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def spec_flags(spec: Any) -> list[str]:
    """``spec``'s pipeline flags, kebab-case."""
    from pxflow.pipelines.options import option_names

    return [flag(n) for n in option_names(spec.options_model())]


def _parts(annotation: Any) -> list[Any]:
    """A field annotation's alternatives (``float | dict | None`` -> ``[float, dict]``; None dropped)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _cli_type(field: Any) -> tuple[Any, list[str] | None]:
    """How a field's CLI text becomes a value: (argparse ``type``, ``choices``).

    Text fields (``str``, literals) keep the text, so a path or ``per_input`` stays a string;
    others are read as numbers, lists or dicts (:func:`parse_literal`), and text that is none
    of these is passed on for the model to reject with a message naming the option.
    """
    parts = _parts(field.annotation)
    literals = [a for a in parts if typing.get_origin(a) is typing.Literal]
    if literals and len(literals) == len(parts):
        return str, [str(v) for lit in literals for v in typing.get_args(lit)]
    if str in parts or literals:
        return str, None

    def value(text: str) -> Any:
        try:
            return parse_literal(text)
        except ValueError:
            return text

    return value, None


def add_pipeline_flags(parser: argparse.ArgumentParser, spec: Any) -> None:
    """One flag per field of ``spec``'s options model, in a group titled after the pipeline.

    A field named like one of the command's own flags cannot become a flag: a ``ValueError`` says so.
    """
    model = spec.options_model()
    fields = dict(model.model_fields) if model is not None else {}
    group = parser.add_argument_group(
        f"options of pipeline {spec.name}",
        "its predict() options" + ("" if fields else ": none") + " (--pipeline NAME --help lists another pipeline's)",
    )
    for name, field in fields.items():
        option = flag(name)
        if option in parser._option_string_actions or option.replace("-", "_") in parser._option_string_actions:
            raise ValueError(f"pipeline {spec.name}'s predict option {name!r} clashes with the command's own {option}")
        kind, choices = _cli_type(field)
        default = field.get_default()
        shown = "" if default is None else f" (default {default})"
        group.add_argument(option, dest=DEST + name, type=kind, choices=choices, default=None,
                           metavar=None if choices else name.upper(), help=(field.description or name) + shown)


def refuse_other_pipelines_flags(parser: argparse.ArgumentParser, spec: Any, argv: Sequence[str]) -> None:
    """A flag that belongs to another registered pipeline's options: ``parser.error`` naming ``spec``'s flags."""
    from pxflow.pipelines.registry import pipeline_names, pipeline_spec

    given = [token.split("=", 1)[0] for token in argv if token.startswith("--")]
    strangers = [t for t in given if t not in parser._option_string_actions]
    if not strangers:
        return
    others: set[str] = set()
    for name in pipeline_names():
        try:
            others.update(spec_flags(pipeline_spec(name)))
        except Exception:  # a plug-in's broken options model is reported when that pipeline is used
            continue
    foreign = [t for t in strangers if flag(t[2:]) in others]
    if foreign:
        own = spec_flags(spec)
        parser.error(
            f"{', '.join(dict.fromkeys(foreign))}: not an option of pipeline {spec.name} "
            f"({'its options: ' + ', '.join(own) if own else 'it takes no options'})"
        )


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline flags given on the command line, as ``predict()`` keywords."""
    return {key[len(DEST):]: value for key, value in vars(args).items() if key.startswith(DEST) and value is not None}
