"""The Jinja2 environment transformers renders chat templates in
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, a
tojson that does not HTML-escape, raise_exception), shared by the golden
generators gen_features.py and ../../testdata/gen_chat_golden.py.
"""
import json

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env
