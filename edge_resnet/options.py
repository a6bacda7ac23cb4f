"""Request fields that the command line offers as options.

A request dataclass declares each of its fields once, with the flag, help
and argparse settings beside it; the command line is made from these. A
kw_only base request holding fields that several requests share is one
group of shared options.
"""

from dataclasses import MISSING, field, fields, is_dataclass


def option(*flags, default=MISSING, help, **argparse_settings):
    """A dataclass field offered as `flags` (none: a positional argument).

    `argparse_settings` go to add_argument as they are, except `group`, the
    heading the option is listed under in --help.
    """
    return field(default=default, metadata={"flags": flags, "help": help, "argparse": argparse_settings})


def own_options(request_class):
    """The fields `request_class` itself declares as options (not those of
    its bases), in declaration order."""
    declared_here = request_class.__dict__.get("__annotations__", {})
    return [item for item in fields(request_class) if item.name in declared_here and "help" in item.metadata]


def option_groups(request_class):
    """The bases of `request_class` that declare options: its shared groups."""
    return [base for base in request_class.__mro__[1:] if is_dataclass(base) and own_options(base)]


def given_fields(request):
    """{name: value} of a request's fields that are not None."""
    return {item.name: getattr(request, item.name) for item in fields(request) if getattr(request, item.name) is not None}
