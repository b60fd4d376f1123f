"""The blocking API for scripts, derived from the async one (:mod:`agentvm.vm`) at import
time: the same classes and methods, without ``await``.

Each class here is generated from its async class: a coroutine method becomes a method that
runs the coroutine to its end on the calling thread (``_native.run_blocking``: every native
call it awaits waits in place, GIL released, Ctrl-C honoured), ``async for`` becomes ``for``,
``async with`` becomes ``with``, and what a method returns is wrapped in its blocking class
(``vm.images``, ``agents.start()``, ``vm.events()``, ``scheduler.exec()``). There is no second
hand-written class per group: a method added to the async API is in the blocking one too.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import _native, events, scheduler, vm

#: Async class -> its blocking class.
_BLOCKING: dict[type, type] = {}


def _wrap(value: Any) -> Any:
    """``value``, in its blocking class when it is an object of the async API."""
    cls = _BLOCKING.get(type(value))
    return value if cls is None else cls(value)


class _Blocking:
    """An object of the async API, used blocking. Attributes are the async object's (API
    objects among them wrapped in their blocking class)."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_async", target)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._async, name)
        wrapped = _wrap(value)
        if wrapped is not value:
            object.__setattr__(self, name, wrapped)  # the same wrapper next time
        return wrapped

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._async, name, value)

    def __repr__(self) -> str:
        return repr(self._async)


def _result(self: _Blocking, value: Any) -> Any:
    """What a method gives: ``self`` for the async object itself, else ``value`` wrapped."""
    return self if value is self._async else _wrap(value)


def _blocking_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: _Blocking, *args: Any, **kwargs: Any) -> Any:
        return _result(self, _native.run_blocking(fn(self._async, *args, **kwargs)))

    return method


def _plain_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: _Blocking, *args: Any, **kwargs: Any) -> Any:
        return _result(self, fn(self._async, *args, **kwargs))

    return method


def _iterate(agen: Any) -> Iterator[Any]:
    """An async iterator, blocking."""
    while True:
        try:
            item = _native.run_blocking(agen.__anext__())
        except StopAsyncIteration:
            return
        yield _wrap(item)


def _generator_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: _Blocking, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return _iterate(fn(self._async, *args, **kwargs))

    return method


def _property(name: str, prop: property) -> property:
    def get(self: _Blocking) -> Any:
        return _wrap(getattr(self._async, name))

    return property(get, doc=prop.__doc__)


def _next(self: _Blocking) -> Any:
    try:
        return _wrap(_native.run_blocking(self._async.__anext__()))
    except StopAsyncIteration:
        raise StopIteration from None


def _iter(self: _Blocking) -> Iterator[Any]:
    return self


def _enter(self: _Blocking) -> Any:
    _native.run_blocking(self._async.__aenter__())
    return self


def _exit(self: _Blocking, *exc: object) -> None:
    _native.run_blocking(self._async.__aexit__(*exc))


#: Methods that become something else, or that the wrapper provides itself.
_SPECIAL = {"__aiter__", "__anext__", "__aenter__", "__aexit__", "__init__", "__repr__"}


def blocking(cls: type) -> type:
    """The blocking class of the async class ``cls``."""
    ns: dict[str, Any] = {
        "__doc__": f"{cls.__doc__ or cls.__name__}\n\nBlocking: derived from :class:`{cls.__module__}.{cls.__qualname__}`.",
        "__module__": __name__,
        "__qualname__": cls.__name__,
    }
    for klass in reversed(cls.__mro__[:-1]):
        for name, member in vars(klass).items():
            if name in _SPECIAL or (name.startswith("_") and not name.startswith("__")):
                continue
            if name.startswith("__") and name not in ("__enter__", "__exit__"):
                continue
            if isinstance(member, (classmethod, staticmethod)):
                ns[name] = member
            elif isinstance(member, property):
                ns[name] = _property(name, member)
            elif inspect.iscoroutinefunction(member):
                ns[name] = _blocking_method(member)
            elif inspect.isasyncgenfunction(member):
                ns[name] = _generator_method(member)
            elif inspect.isfunction(member):
                ns[name] = _plain_method(member)
    if hasattr(cls, "__anext__"):
        ns["__iter__"] = _iter
        ns["__next__"] = _next
    if hasattr(cls, "__aenter__"):
        ns["__enter__"] = _enter
        ns["__exit__"] = _exit
    sync_cls = type(cls.__name__, (_Blocking,), ns)
    _BLOCKING[cls] = sync_cls
    return sync_cls


def _blocking_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def function(*args: Any, **kwargs: Any) -> Any:
        return _wrap(_native.run_blocking(fn(*args, **kwargs)))

    function.__module__ = __name__
    return function


if TYPE_CHECKING:
    # Generated at import time: static checkers see them as Any (the async API carries the
    # types).
    AgentVm = Any
    Agent = Any
    Containers = Any
    Images = Any
    Sessions = Any
    Definitions = Any
    Agents = Any
    Server = Any
    Subscription = Any
    Scheduler = Any
    ExecStream = Any
    open: Callable[..., Any]
    connect: Callable[..., Any]
else:
    AgentVm = blocking(vm.AgentVm)
    Agent = blocking(vm.Agent)
    Containers = blocking(vm.Containers)
    Images = blocking(vm.Images)
    Sessions = blocking(vm.Sessions)
    Definitions = blocking(vm.Definitions)
    Agents = blocking(vm.Agents)
    Server = blocking(vm.Server)
    Subscription = blocking(events.Subscription)
    Scheduler = blocking(scheduler.Scheduler)
    ExecStream = blocking(scheduler.ExecStream)
    #: :func:`agentvm.open`, blocking.
    open = _blocking_function(vm.open)
    #: :func:`agentvm.connect`, blocking.
    connect = _blocking_function(vm.connect)

__all__ = [
    "Agent",
    "AgentVm",
    "Agents",
    "Containers",
    "Definitions",
    "ExecStream",
    "Images",
    "Scheduler",
    "Server",
    "Sessions",
    "Subscription",
    "blocking",
    "connect",
    "open",
]
