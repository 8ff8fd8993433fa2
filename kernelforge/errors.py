"""Exception types; each message names the thing that is wrong (file, device, op, parameter)."""

from __future__ import annotations


class KernelforgeError(Exception):
    """Base class of every error kernelforge raises on purpose."""


class DeviceNotFoundError(KernelforgeError):
    """A ``--device`` selector matched no adapter; the message lists the adapters that exist."""


class InvalidParamsError(KernelforgeError, ValueError):
    """Kernel parameters are not in the op's search space or break a constraint."""


class KernelCompileError(KernelforgeError):
    """The driver rejected a rendered kernel."""


class DatabaseError(KernelforgeError):
    """A tuning database file is unreadable, corrupt or of an unknown schema."""


class ShapeError(KernelforgeError, ValueError):
    """Input arrays or a shape string do not fit the op."""


class ExportError(KernelforgeError):
    """A model or tuning database that cannot be written as a browser bundle (the message says why)."""


class DeviceDisconnectedError(KernelforgeError):
    """A remote device's page went away mid-trial (a reload, a sleeping tab, a dropped connection).

    Whatever the page held is gone with it; the tuner fails the trial in flight (reason ``disconnected``) and the
    next trial starts from nothing on the page that comes back.
    """
