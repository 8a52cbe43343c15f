"""A minimal stand-in for ``sancho.utest``, the framework of Durus 4.3's unit tests.

Why: Durus 4.3's sdist ships tests written for sancho, which is not published
with it.  Only what those tests use is provided (written for this repository):
``UTest``, whose instantiation runs every test method of the instance, each
between ``_pre()`` and ``_post()``, and ``raises``.  A test method is any
public method of the class (most of Durus 4.3's are named ``a``, ``update``,
``check_...``, ``test__and__``).  tools/run_durus43_tests.py registers this
module as ``sancho.utest`` and installs its own ``RUNNER`` to run and report
each method alone.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from collections.abc import Callable
from typing import Any


def raises(exception: type[BaseException] | tuple[type[BaseException], ...],
           function: Callable[..., Any], *args: Any, **kwargs: Any) -> BaseException:
    """Call ``function``; return the ``exception`` it raises, fail if it raises none."""
    try:
        function(*args, **kwargs)
    except exception as error:
        return error
    raise AssertionError(f"{getattr(function, '__name__', function)!r} did not raise "
                         f"{exception!r}")


def test_names(cls: type) -> list[str]:
    """The test methods of ``cls``: public functions, inherited ones first."""
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, UTest):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and inspect.isfunction(value):
                names[name] = None
    return list(names)


def run_all(test: UTest) -> None:
    """The default runner: every test method in turn, a line per failure."""
    for name in test_names(type(test)):
        test._pre()
        try:
            getattr(test, name)()
        except Exception:
            print(f"{type(test).__name__}.{name} failed:\n{traceback.format_exc()}",
                  file=sys.stderr)
        finally:
            test._post()


# The harness replaces this to run and report each method separately.
RUNNER: Callable[[UTest], None] = run_all


class UTest:
    """Instantiating a subclass runs its tests (through ``RUNNER``)."""

    def __init__(self) -> None:
        RUNNER(self)

    def _pre(self) -> None:
        """Called before each test method."""

    def _post(self) -> None:
        """Called after each test method."""
