"""JSON-RPC 2.0 for the node: typed errors, a transport-free dispatcher, an HTTP/WebSocket server.

``daimon_node.rpc.server.serve_rpc`` (or ``RpcServer``) serves an ``api.RpcBackend``;
``daimon_node.client.RpcClient`` talks to it. The reference is ``docs/rpc.md``.
Only the errors are imported here, so that the CLI's client does not pull in the server.
"""

from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all

__all__ = list(_errors_all)
