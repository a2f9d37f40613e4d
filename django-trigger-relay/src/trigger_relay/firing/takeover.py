"""Which receivers of ``Event.fired`` reach dj-triggers' Celery path (guarantees §2.3).

A Temporal-routed firing must never also reach ``triggers.tasks.handle_event``. dj-triggers
connects its receiver ``triggers.tasks.on_event_fired`` once, with no ``dispatch_uid`` and no
sender, but a site may have connected it again in other ways: with a ``dispatch_uid``, for a
sender (an ``Event`` subclass), through a ``functools.wraps`` decorator, or from a module
that re-imports (``importlib.reload``) ``triggers.tasks``. Django's ``disconnect()`` removes
one exact registration, so this module reads the signal's registrations themselves.

Two kinds of registrations are told apart:

- :func:`is_dj_triggers_receiver`: dj-triggers' function itself, or a ``functools.wraps``
  chain (or an argument-less ``functools.partial``) around it. The add-on calls that function
  for Celery-routed firings, so these are safe to disconnect.
- :func:`celery_path_references`: any other receiver whose code refers to
  ``triggers.tasks`` (the module, ``on_event_fired``, ``handle_event``, or the task by
  name). It may do other things too, so it is not disconnected; the system check names it.

Django's layout of ``Signal.receivers`` is private: entries are
``(lookup_key, receiver_or_weakref)`` up to Django 4.2 and
``(lookup_key, receiver_or_weakref, is_async)`` since 5.0; only the first two are read.
"""

from __future__ import annotations

import functools
import types
import weakref
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from typing import TypeGuard
from typing import TypeVar
from typing import cast

from django.dispatch import Signal
from django.dispatch.dispatcher import NONE_ID

TASKS_MODULE = "triggers.tasks"
RECEIVER_QUALNAME = "on_event_fired"
#: Names by which the Celery path is reached (``send_task``, ``import_module``, imports).
CELERY_PATH_NAMES = frozenset(
    {TASKS_MODULE, f"{TASKS_MODULE}.handle_event", f"{TASKS_MODULE}.{RECEIVER_QUALNAME}"}
)

#: How many calls deep a receiver's code is followed (receiver -> helper -> helper's
#: helper). Deep enough for a site's own wrappers; bounded so a check never walks a library.
MAX_DEPTH = 2

_T = TypeVar("_T")


def receiver_id(receiver: Any) -> object:
    """The id by which Django keys a receiver connected without a ``dispatch_uid``: that of
    a bound method's instance and function, else of the receiver. Django's private
    ``django.dispatch.dispatcher._make_id``, the same from 4.2 to 5.2."""
    if hasattr(receiver, "__func__"):
        return (id(receiver.__self__), id(receiver.__func__))
    return id(receiver)


@dataclass(frozen=True)
class Registration:
    """One entry of ``Signal.receivers``."""

    #: Django's key: ``(dispatch_uid or id of the receiver, id of the sender)``.
    lookup_key: tuple[Any, Any]
    #: The receiver; ``None`` if it was weakly referenced and has been collected.
    receiver: Callable[..., Any] | None

    @property
    def dispatch_uid(self) -> object | None:
        if self.receiver is not None and self.lookup_key[0] == receiver_id(self.receiver):
            return None
        return self.lookup_key[0]

    @property
    def sender_id(self) -> object:
        return self.lookup_key[1]

    @property
    def for_any_sender(self) -> bool:
        return bool(self.sender_id == NONE_ID)

    def describe(self, sender_names: dict[int, str] | None = None) -> str:
        """``module.qualname (dispatch_uid=..., sender=...)`` for logs and check messages."""
        if self.for_any_sender:
            sender = "any sender"
        else:
            sender_id = self.sender_id
            name = (sender_names or {}).get(sender_id) if isinstance(sender_id, int) else None
            sender = f"sender {name}" if name else f"sender with id {sender_id}"
        uid = self.dispatch_uid
        details = sender if uid is None else f"dispatch_uid={uid!r}, {sender}"
        return f"{qualified_name(self.receiver)} ({details})"


def registrations(signal: Signal) -> list[Registration]:
    """The live registrations of ``signal`` (a snapshot)."""
    with signal.lock:
        entries = list(signal.receivers)
    return [Registration(entry[0], _resolve(entry[1])) for entry in entries]


def disconnect_registrations(signal: Signal, keys: set[tuple[Any, Any]]) -> None:
    """Remove the registrations with these lookup keys, whatever their sender or uid.

    ``Signal.disconnect()`` needs the sender object, and a registration only keeps its id;
    so the entries are removed under the signal's lock as ``disconnect()`` does, and its
    per-sender cache is emptied as ``disconnect()`` does.
    """
    with signal.lock:
        signal.receivers = [entry for entry in signal.receivers if entry[0] not in keys]
        signal.sender_receivers_cache.clear()


def sender_names() -> dict[int, str]:
    """``id(model) -> app_label.ModelName`` of every installed model, to name senders."""
    from django.apps import apps

    return {id(model): model._meta.label for model in apps.get_models()}


def qualified_name(obj: object) -> str:
    """``module.qualname`` of a function, method, partial or callable object.

    A function is named where it was defined, not by the ``__module__`` and
    ``__qualname__`` that ``functools.wraps`` copied onto it from the function it wraps.
    """
    if obj is None:
        return "<collected receiver>"
    if _is(obj, functools.partial):
        return f"functools.partial({qualified_name(obj.func)})"
    if _is(obj, types.MethodType):
        return qualified_name(obj.__func__)
    if _is(obj, types.FunctionType):
        name = f"{_defining_module(obj)}.{_defining_qualname(obj)}"
        wrapped = _wrapped(obj)
        return f"{name} (functools.wraps of {qualified_name(wrapped)})" if wrapped else name
    target = type(obj)
    return f"{target.__module__}.{target.__qualname__}"


def is_dj_triggers_receiver(receiver: object) -> bool:
    """Whether ``receiver`` is dj-triggers' ``on_event_fired``, or only wraps it.

    Recognized by module and name rather than identity, so that a copy made by
    ``importlib.reload(triggers.tasks)`` counts too. ``functools.wraps`` says "this is that
    function", so a wrapper that declares it counts as it; so does a ``functools.partial``
    that binds nothing (one that binds arguments changes what Celery receives).
    """
    seen: set[int] = set()
    current: object = receiver
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_original_function(current):
            return True
        if _is(current, functools.partial):
            current = current.func if not current.args and not current.keywords else None
        else:
            current = _wrapped(current)
    return False


def celery_path_references(receiver: object, *, relay_receiver: object) -> list[str]:
    """What in ``receiver``'s code reaches dj-triggers' Celery path, sorted; empty if none.

    Reads its code objects (and those nested in them): global names resolved against its
    module's globals, imports, string constants naming the module or the task; its closure
    cells and default arguments; the targets of ``functools.partial``, bound methods and
    callable objects (and their instance attributes); and, up to :data:`MAX_DEPTH` calls
    deep, the functions it refers to. A reference counts even on a branch that may never
    run: the check cannot know which firings take it. ``relay_receiver`` (trigger_relay's
    own, :func:`trigger_relay.firing.receivers.on_event_fired`, which calls dj-triggers'
    receiver only for Celery-routed firings) is not followed where ``receiver`` reaches it.
    """
    scan = _Scan(relay_receiver)
    scan.value(receiver, 0)
    return sorted(scan.found)


def _is(obj: object, kind: type[_T]) -> TypeGuard[_T]:
    # isinstance() falls back to obj.__class__, which evaluates a lazy object (Django's
    # SimpleLazyObject, Celery's Proxy) found among a module's globals: the type alone here.
    return issubclass(type(obj), kind)


def _resolve(ref: object) -> Callable[..., Any] | None:
    # weakref.WeakMethod subclasses weakref.ref; a strong reference is the receiver itself,
    # which connect() took as a callable.
    if isinstance(ref, weakref.ref):
        return ref()
    return cast("Callable[..., Any]", ref)


def _defining_module(function: types.FunctionType) -> str:
    return str(function.__globals__.get("__name__", function.__module__))


def _defining_qualname(function: types.FunctionType) -> str:
    # The code object keeps the name it was compiled with (Python 3.11+).
    return str(getattr(function.__code__, "co_qualname", function.__qualname__))


def _is_original_function(obj: object) -> bool:
    return (
        _is(obj, types.FunctionType)
        and _defining_module(obj) == TASKS_MODULE
        and _defining_qualname(obj) == RECEIVER_QUALNAME
    )


def _wrapped(obj: object) -> object | None:
    try:
        return obj.__dict__.get("__wrapped__") if hasattr(obj, "__dict__") else None
    except Exception:  # an object whose __dict__ misbehaves wraps nothing we can see
        return None


def _celery_path_name(obj: object) -> str | None:
    """The name under which ``obj`` *is* part of the Celery path, else ``None``."""
    if _is(obj, str):
        # A module-level constant naming the task (``send_task(HANDLE_EVENT)``).
        return obj if obj in CELERY_PATH_NAMES else None
    if _is(obj, types.ModuleType):
        name = obj.__name__
        return name if name == TASKS_MODULE else None
    if _is(obj, types.FunctionType):
        if _defining_module(obj) == TASKS_MODULE:
            return f"{TASKS_MODULE}.{_defining_qualname(obj)}"
        return None
    # Celery's task proxies and tasks (``handle_event``), and signatures of them
    # (``handle_event.s(...)``): only objects of Celery's own types, so that no arbitrary
    # object's attribute (a lazy object, a descriptor) is evaluated here.
    if type(obj).__module__.partition(".")[0] != "celery":
        return None
    for attribute in ("name", "task"):
        try:
            value = getattr(obj, attribute, None)
        except Exception:  # an unfinalized proxy: not resolvable, so not a known task
            continue
        if isinstance(value, str) and value.startswith(f"{TASKS_MODULE}."):
            return value
    return None


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and the code objects nested in it (lambdas, inner functions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


class _Scan:
    def __init__(self, relay_receiver: object) -> None:
        self.relay_receiver = relay_receiver
        self.found: set[str] = set()
        self.seen: set[int] = set()
        # Kept alive while scanning, so that ids in ``seen`` are not reused.
        self.kept: list[object] = []

    def value(self, obj: object, depth: int) -> None:
        name = _celery_path_name(obj)
        if name is not None:
            self.found.add(name)
            return
        if depth > MAX_DEPTH or id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        self.kept.append(obj)
        if obj is self.relay_receiver:
            # trigger_relay's own receiver calls dj-triggers' only for Celery-routed firings.
            return
        if _is(obj, functools.partial):
            self.value(obj.func, depth)
            for argument in (*obj.args, *obj.keywords.values()):
                self.value(argument, depth + 1)
        elif _is(obj, types.MethodType):
            self.value(obj.__func__, depth)
            self.attributes(obj.__self__, depth)
        elif _is(obj, types.FunctionType):
            self.function(obj, depth)
        elif callable(obj) and not _is(obj, type) and not _is(obj, types.BuiltinFunctionType):
            # A callable object: its class's __call__ and what the instance holds.
            call = next(
                (
                    vars(klass)["__call__"]
                    for klass in type(obj).__mro__
                    if "__call__" in vars(klass)
                ),
                None,
            )
            if isinstance(call, types.FunctionType):
                self.function(call, depth)
            self.attributes(obj, depth)
        wrapped = _wrapped(obj)
        if wrapped is not None:
            self.value(wrapped, depth)

    def attributes(self, instance: object, depth: int) -> None:
        try:
            attributes = dict(vars(instance))
        except TypeError:  # no __dict__ (slots, builtins)
            return
        for attribute in attributes.values():
            self.value(attribute, depth + 1)

    def function(self, function: types.FunctionType, depth: int) -> None:
        namespace = function.__globals__
        for code in _code_objects(function.__code__):
            names = set(code.co_names)
            for name in names:
                if name in CELERY_PATH_NAMES or name.startswith(f"{TASKS_MODULE}."):
                    self.found.add(name)  # `import triggers.tasks`, `from triggers.tasks ...`
                if name not in namespace:
                    continue
                referenced = namespace[name]
                if _is(referenced, types.ModuleType):
                    # `triggers.tasks.handle_event` through `import triggers`: the module's
                    # attributes named in this code.
                    for attribute in names & set(vars(referenced)):
                        hit = _celery_path_name(vars(referenced)[attribute])
                        if hit is not None:
                            self.found.add(hit)
                self.value(referenced, depth + 1)
            for const in code.co_consts:
                if isinstance(const, str) and const in CELERY_PATH_NAMES:
                    self.found.add(const)  # send_task("triggers.tasks.handle_event"), ...
                elif (
                    isinstance(const, tuple) and "tasks" in const and "triggers" in names
                ):  # `from triggers import tasks` (the fromlist is a constant)
                    self.found.add(TASKS_MODULE)
        for cell in function.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later)
                continue
            self.value(contents, depth + 1)
        for default in (*(function.__defaults__ or ()), *(function.__kwdefaults__ or {}).values()):
            self.value(default, depth + 1)
