"""JSON-RPC 2.0 for the node: typed errors, a transport-free dispatcher, an HTTP/WebSocket server.

``daimon_node.rpc.server.serve_rpc`` (or ``RpcServer``) serves an ``api.RpcBackend``;
``daimon_node.rpc.client.RpcClient`` talks to it. The reference is ``docs/rpc.md``.
Only the errors are imported here, so that the CLI's client does not pull in the server.
"""

from daimon_node.rpc.errors import *  # noqa: F401,F403
from daimon_node.rpc.errors import __all__ as _errors_all

__all__ = list(_errors_all)
