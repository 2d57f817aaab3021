"""The public API (faceid/__init__.py): every name resolves to what its home module defines, lazily."""

from __future__ import annotations

import subprocess
import sys

from shared_paths import REPO_ROOT

import faceid


def test_every_public_name_is_its_home_modules_object():
    import importlib

    for name in faceid.__all__:
        home = importlib.import_module(faceid._HOMES[name])
        assert getattr(faceid, name) is getattr(home, name), name
    assert set(dir(faceid)) >= set(faceid.__all__)


def test_import_faceid_costs_no_torch():
    code = "import sys, faceid; faceid.Gallery; faceid.template_of; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_unknown_name_is_an_attribute_error():
    try:
        faceid.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("faceid.no_such_thing resolved")
