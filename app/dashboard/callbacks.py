"""Callbacks declared at module level, next to the layout they serve, and installed on each Dash app that is built.

`dash.callback` keeps its callbacks in a process-wide list that the first app to serve a request takes over
(dash.Dash._setup_server moves them into that app and clears the list), so a second app in the same process, e.g. in
tests, would get none. A `Callbacks` keeps them until `install(app)` gives them to an app, as often as apps are built.
Its two decorators take exactly `app.callback`'s and `app.clientside_callback`'s arguments
(https://dash.plotly.com/reference#app.callback), and the functions stay plain module-level functions that tests can call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import dash

F = TypeVar("F", bound=Callable[..., Any])


class Callbacks:
    """A page's callbacks, recorded by `callback` and `clientside_callback` and registered on an app by `install`."""

    def __init__(self) -> None:
        self._server: list[tuple[tuple[Any, ...], dict[str, Any], Callable[..., Any]]] = []
        self._client: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def callback(self, *dependencies: Any, **kwargs: Any) -> Callable[[F], F]:
        """Return a decorator recording a server-side callback (Output/Input/State as `app.callback` takes them)."""

        def record(function: F) -> F:
            self._server.append((dependencies, kwargs, function))
            return function

        return record

    def clientside_callback(self, function: str, *dependencies: Any, **kwargs: Any) -> None:
        """Record a clientside callback: `function` is JavaScript source, the rest as `app.clientside_callback` takes it."""
        self._client.append((function, dependencies, kwargs))

    def install(self, app: dash.Dash) -> None:
        """Register every recorded callback on `app`."""
        for dependencies, kwargs, function in self._server:
            app.callback(*dependencies, **kwargs)(function)
        for source, dependencies, kwargs in self._client:
            app.clientside_callback(source, *dependencies, **kwargs)

    def __len__(self) -> int:
        return len(self._server) + len(self._client)
